package snapshotter

import (
	"archive/tar"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// TestContainerdSuite runs containerd's own snapshotter tests on the
// ordinary snapshots, under the name that gives overlayfs's expectations.
func TestContainerdSuite(t *testing.T) {
	testenv.Root(t)
	n := memstore.New()
	testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		s, err := New(ctx, root, n)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}

// lazyImage is a two-layer image on a node, with layer indexes: the top
// layer deletes a file, makes a directory opaque and overrides a file.
type lazyImage struct {
	node   Store
	root   cid.Cid
	layers []digest.Digest
	chain  []string // chain IDs, bottom first
}

func pushLazyImage(t *testing.T) lazyImage {
	t.Helper()
	file := func(name, body string) testimage.File {
		return testimage.File{Header: tar.Header{Name: name, Typeflag: tar.TypeReg}, Body: body}
	}
	dir := func(name string) testimage.File {
		return testimage.File{Header: tar.Header{Name: name, Typeflag: tar.TypeDir}}
	}
	img := testimage.FromLayers(t,
		[]testimage.File{dir("etc/"), file("etc/os-release", "base\n"), file("etc/gone", "x"), dir("var/"), file("var/old", "old"), file("keep", "kept\n")},
		[]testimage.File{file("etc/.wh.gone", ""), file("var/.wh..wh..opq", ""), file("var/new", "new"), file("etc/os-release", "top\n")},
	)
	layout := t.TempDir()
	if err := testimage.WriteLayout(layout, "v1", mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})); err != nil {
		t.Fatal(err)
	}
	n := memstore.New()
	res := testimage.Push(context.Background(), t, n, layout, image.PushOptions{Index: true})
	li := lazyImage{node: n, root: res.Root}
	ls, _ := img.Layers()
	cf, _ := img.ConfigFile()
	var diffs []digest.Digest
	for i, l := range ls {
		d, _ := l.Digest()
		li.layers = append(li.layers, digest.Digest(d.String()))
		diffs = append(diffs, digest.Digest(cf.RootFS.DiffIDs[i].String()))
		li.chain = append(li.chain, chainID(diffs).String())
	}
	return li
}

// chainID is containerd's identity.ChainID, written out so that the test
// checks the snapshotter against the definition rather than itself.
func chainID(diffs []digest.Digest) digest.Digest {
	id := diffs[0]
	for _, d := range diffs[1:] {
		id = digest.FromString(id.String() + " " + d.String())
	}
	return id
}

func (li lazyImage) labels(i int) map[string]string {
	return map[string]string{
		snapshots.LabelSnapshotRef:             li.chain[i],
		LabelRoot:                              li.root.String(),
		snapshotters.TargetLayerDigestLabel:    li.layers[i].String(),
		snapshotters.TargetImageLayersLabel:    "",
		snapshotters.TargetManifestDigestLabel: "",
	}
}

func newLazySnapshotter(t *testing.T, root string, n Store) *Snapshotter {
	t.Helper()
	s, err := New(context.Background(), root, n, WithResolver(NewResolver(n, 10*time.Second, func(context.Context, string, digest.Digest) (cid.Cid, bool) {
		return cid.Undef, false
	})))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unpack does what containerd's unpacker does with a remote snapshotter:
// prepare each layer with its chain ID as the target, expecting "already
// exists".
func (li lazyImage) unpack(ctx context.Context, t *testing.T, s snapshots.Snapshotter) {
	t.Helper()
	parent := ""
	for i := range li.layers {
		_, err := s.Prepare(ctx, "extract-"+li.chain[i], parent, snapshots.WithLabels(li.labels(i)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("prepare layer %d: %v, want already exists", i, err)
		}
		info, err := s.Stat(ctx, li.chain[i])
		if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != parent {
			t.Fatalf("layer %d: %+v %v", i, info, err)
		}
		parent = li.chain[i]
	}
}

func mountAt(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(ms, dir); err != nil {
		t.Fatalf("mount %+v: %v", ms, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func TestLazyLayersStackUnderOverlayfs(t *testing.T) {
	testenv.FUSE(t)
	li := pushLazyImage(t)
	ctx := namespaces.WithNamespace(context.Background(), "test")
	root := t.TempDir()
	s := newLazySnapshotter(t, root, li.node)
	li.unpack(ctx, t, s)

	ms, err := s.Prepare(ctx, "container", li.chain[1])
	if err != nil {
		t.Fatal(err)
	}
	rootfs := mountAt(t, ms)
	for name, want := range map[string]string{"etc/os-release": "top\n", "keep": "kept\n", "var/new": "new"} {
		if data, err := os.ReadFile(filepath.Join(rootfs, name)); err != nil || string(data) != want {
			t.Errorf("%s: %q %v, want %q", name, data, err, want)
		}
	}
	for _, gone := range []string{"etc/gone", "var/old"} {
		if _, err := os.Lstat(filepath.Join(rootfs, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want deleted by the top layer", gone, err)
		}
	}
	// The container writes to its own layer only.
	if err := os.WriteFile(filepath.Join(rootfs, "etc/os-release"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.Stats().ReadBytes.Load() == 0 {
		t.Error("no reads counted")
	}

	// A layer that a container stands on cannot go.
	if err := s.Remove(ctx, li.chain[1]); err == nil {
		t.Error("removed a layer in use")
	}

	// After a restart, the layers are mounted again.
	if err := mount.UnmountAll(rootfs, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newLazySnapshotter(t, root, li.node)
	defer s.Close()
	ms, err = s.View(ctx, "view", li.chain[1])
	if err != nil {
		t.Fatal(err)
	}
	view := mountAt(t, ms)
	if data, err := os.ReadFile(filepath.Join(view, "etc/os-release")); err != nil || string(data) != "top\n" {
		t.Errorf("after a restart: %q %v", data, err)
	}

	// Removal, top down, unmounts and releases everything.
	for _, k := range []string{"view", "container", li.chain[1], li.chain[0]} {
		if k == "view" {
			if err := mount.UnmountAll(view, 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	if len(entries) != 0 {
		t.Errorf("%d snapshot directories left", len(entries))
	}
}

func TestConcurrentPreparesOfOneLayerMountItOnce(t *testing.T) {
	testenv.FUSE(t)
	li := pushLazyImage(t)
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s := newLazySnapshotter(t, t.TempDir(), li.node)
	defer s.Close()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Prepare(ctx, "extract-"+string(rune('a'+i)), "", snapshots.WithLabels(li.labels(0)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("prepare %d: %v", i, err)
		}
	}
	var committed int
	s.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		committed++
		return nil
	})
	if committed != 1 || len(s.lazy) != 1 {
		t.Errorf("%d snapshots, %d mounts; want one of each", committed, len(s.lazy))
	}
}

func TestLabelsThatNameNoLayerMakeAnOrdinarySnapshot(t *testing.T) {
	testenv.Root(t)
	li := pushLazyImage(t)
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s := newLazySnapshotter(t, t.TempDir(), li.node)
	defer s.Close()
	missing, _ := cid.Decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	for name, labels := range map[string]map[string]string{
		"no labels":      {snapshots.LabelSnapshotRef: "sha256:1"},
		"garbage digest": {snapshots.LabelSnapshotRef: "sha256:2", LabelRoot: li.root.String(), snapshotters.TargetLayerDigestLabel: "nonsense"},
		"garbage root":   {snapshots.LabelSnapshotRef: "sha256:3", LabelRoot: "nonsense", snapshotters.TargetLayerDigestLabel: li.layers[0].String()},
		"foreign image":  {snapshots.LabelSnapshotRef: "sha256:4", snapshotters.TargetRefLabel: "docker.io/library/debian:12", snapshotters.TargetLayerDigestLabel: li.layers[0].String()},
		"other layer":    {snapshots.LabelSnapshotRef: "sha256:5", LabelRoot: li.root.String(), snapshotters.TargetLayerDigestLabel: digest.FromString("x").String()},
		"unreachable":    {snapshots.LabelSnapshotRef: "sha256:6", LabelRoot: missing.String(), snapshotters.TargetLayerDigestLabel: li.layers[0].String()},
	} {
		ms, err := s.Prepare(ctx, "extract-"+name, "", snapshots.WithLabels(labels))
		if err != nil || len(ms) != 1 || ms[0].Type != "bind" {
			t.Errorf("%s: %+v %v, want an ordinary snapshot", name, ms, err)
		}
	}
	if len(s.lazy) != 0 {
		t.Errorf("%d lazy mounts", len(s.lazy))
	}
}

func TestResolverFindsTheImageByReference(t *testing.T) {
	li := pushLazyImage(t)
	var asked string
	r := NewResolver(li.node, 10*time.Second, func(_ context.Context, name string, _ digest.Digest) (cid.Cid, bool) {
		asked = name
		return registry.IPFSRoot(name)
	})
	d, err := r(context.Background(), map[string]string{
		snapshotters.TargetRefLabel:         "127.0.0.1:5050/ipfs/" + li.root.String() + ":latest",
		snapshotters.TargetLayerDigestLabel: li.layers[1].String(),
	})
	if err != nil || d.Digest != li.layers[1] {
		t.Fatalf("%+v %v", d, err)
	}
	if asked != "ipfs/"+li.root.String() {
		t.Errorf("asked for %q", asked)
	}
}

// A snapshotter opened on a new root has nothing to restore, and says no
// error about it.
func TestNewRootLogsNoError(t *testing.T) {
	testenv.Root(t)
	n := memstore.New()
	var logs strings.Builder
	s, err := New(context.Background(), t.TempDir(), n, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a new snapshotter logged an error:\n%s", logs.String())
	}
}
