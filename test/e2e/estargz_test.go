package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// estargzImage writes the image tagged tag in the OCI layout src again
// with every layer converted to eStargz by the estargz package (what
// `nerdctl image convert --estargz` uses), tagged "estargz" in a new
// layout.
func estargzImage(t *testing.T, src, tag string) string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(src)
	must(err)
	ii, err := p.ImageIndex()
	must(err)
	im, err := ii.IndexManifest()
	must(err)
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != tag {
			continue
		}
		orig, err := ii.Image(d.Digest)
		must(err)
		cf, err := orig.ConfigFile()
		must(err)
		layers, err := orig.Layers()
		must(err)
		out := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
		for i, l := range layers {
			rc, err := l.Uncompressed()
			must(err)
			tarPath := filepath.Join(t.TempDir(), fmt.Sprintf("layer-%d.tar", i))
			f, err := os.Create(tarPath)
			must(err)
			size, err := io.Copy(f, rc)
			rc.Close()
			must(err)
			b, err := estargz.Build(io.NewSectionReader(f, 0, size))
			must(err)
			blobPath := tarPath + ".estargz"
			g, err := os.Create(blobPath)
			must(err)
			_, err = io.Copy(g, b)
			must(err)
			must(g.Close())
			must(b.Close())
			f.Close()
			el, err := tarball.LayerFromFile(blobPath, tarball.WithMediaType(types.OCILayer))
			must(err)
			out, err = mutate.AppendLayers(out, el)
			must(err)
		}
		ncf, err := out.ConfigFile()
		must(err)
		ncf.Config, ncf.OS, ncf.Architecture, ncf.Variant = cf.Config, cf.OS, cf.Architecture, cf.Variant
		out, err = mutate.ConfigFile(out, ncf)
		must(err)
		dir := filepath.Join(t.TempDir(), "oci")
		lp, err := layout.Write(dir, empty.Index)
		must(err)
		must(lp.AppendImage(out, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "estargz"})))
		return dir
	}
	t.Fatalf("no image tagged %s in %s", tag, src)
	return ""
}

// TestMountReadsAnEStargzImageThroughItsTOC: the two-layer Debian image
// converted to eStargz is indexed by its layers' own TOCs (no zTOC is
// built), and mounted from a peer it equals umoci's unpack of the same
// image, to the byte, but for eStargz's own files, which the mount hides.
func TestMountReadsAnEStargzImageThroughItsTOC(t *testing.T) {
	testenv.FUSE(t)
	testenv.Tool(t, "umoci")
	layout := estargzImage(t, changedDebian(t), "changed")
	a := startShoalDaemon(t)
	out := strings.TrimSpace(a.run(t, "push", "oci:"+layout+":estargz"))
	root := out[strings.LastIndex(out, "\n")+1:]

	var tree1 struct {
		Children []struct {
			Role     string
			Children []struct {
				Role        string
				Annotations map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(a.run(t, "inspect", root, "--json")), &tree1); err != nil {
		t.Fatal(err)
	}
	layers := 0
	for _, m := range tree1.Children {
		for _, l := range m.Children {
			if l.Role != "layer" {
				continue
			}
			layers++
			if f := l.Annotations["io.shoal.layer.index.format"]; f != "estargz-toc+gzip" {
				t.Errorf("layer indexed as %q, want by its own TOC", f)
			}
		}
	}
	if layers != 2 {
		t.Fatalf("%d layers in the image, want 2:\n%s", layers, a.run(t, "inspect", root))
	}

	ref := filepath.Join(t.TempDir(), "ref")
	runTool(t, "umoci", "unpack", "--image", layout+":estargz", ref)
	want := tree(t, filepath.Join(ref, "rootfs"))
	for _, own := range []string{"stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"} {
		delete(want, own)
	}

	b := &shoalDaemon{bin: a.bin, home: t.TempDir()}
	b.run(t, "init", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen=")
	mnt := t.TempDir()
	cmd := b.command("mount", root, mnt, "--peer", a.Peer)
	logs := testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
		return strings.Contains(logs, "mounted ")
	})
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })

	if diffs := treeDiffs(want, tree(t, mnt)); len(diffs) > 0 {
		t.Fatalf("%d differences between the mount and umoci's unpack, first:\n%s\nmount log:\n%s", len(diffs), strings.Join(diffs[:min(len(diffs), 20)], "\n"), logs.String())
	}
	t.Logf("%d paths compared", len(want))
	if out, err := exec.Command(b.bin, "unmount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("shoal unmount: %v\n%s", err, out)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("shoal mount after unmount: %v\n%s", err, logs.String())
	}
	m := regexp.MustCompile(`read ([0-9.]+) MiB of files in (\d+) reads \((\d+) failed\)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no stats from the mount:\n%s", logs.String())
	}
	if failed, _ := strconv.Atoi(m[3]); failed != 0 {
		t.Errorf("%s reads failed:\n%s", m[3], logs.String())
	}
	t.Logf("mount: %s", logs.String()[strings.LastIndex(logs.String(), "mount: "):])
}
