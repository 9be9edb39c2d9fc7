// Package containerd puts images from IPFS into containerd, so that
// containerd runs them on shoal's snapshotter before their layers have
// arrived.
package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/snapshotter"
)

// Defaults are those of ctr and nerdctl.
const (
	DefaultAddress     = "/run/containerd/containerd.sock"
	DefaultNamespace   = "default"
	DefaultSnapshotter = "shoal"
)

// LabelRoot on a containerd image is the root CID it was imported from.
const LabelRoot = "io.shoal.root"

// Options say where in containerd an image goes.
type Options struct {
	// Address is containerd's socket: $CONTAINERD_ADDRESS, else
	// DefaultAddress, when empty.
	Address string
	// Namespace is $CONTAINERD_NAMESPACE, else DefaultNamespace, when empty.
	Namespace string
	// Snapshotter is the proxy plugin name shoal's snapshotter has in
	// containerd's config (DefaultSnapshotter when empty).
	Snapshotter string
	// Platform chooses the manifest of a multi-platform image.
	Platform ocispec.Platform
	// Timeout bounds how long reading the image waits for peers.
	Timeout time.Duration
}

func (o *Options) defaults() {
	if o.Address == "" {
		o.Address = os.Getenv("CONTAINERD_ADDRESS")
	}
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv("CONTAINERD_NAMESPACE")
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Snapshotter == "" {
		o.Snapshotter = DefaultSnapshotter
	}
}

// Result is an image as containerd now has it.
type Result struct {
	Name   string             // the normalized reference
	Target ocispec.Descriptor // the image's top descriptor
	// Lazy and Unpacked count the layers the snapshotter mounted lazily
	// and those fetched and unpacked because they have no index.
	Lazy, Unpacked int
}

// NormalizeRef gives ref the form containerd's image names have, as ctr
// and nerdctl expect: "debian:12" is "docker.io/library/debian:12".
func NormalizeRef(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", ref, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

// Import creates image ref in containerd from the image at root: its
// indexes, manifests and the config go into containerd's content store,
// and its layers into the snapshotter, lazily where they have indexes.
// Layers without an index are fetched and unpacked as containerd would.
func Import(ctx context.Context, store image.Store, root cid.Cid, ref string, opts Options) (Result, error) {
	opts.defaults()
	name, err := NormalizeRef(ref)
	if err != nil {
		return Result{}, err
	}
	t, err := image.ReadTree(ctx, store, root, opts.Timeout)
	if err != nil {
		return Result{}, err
	}
	m, err := t.Manifest(opts.Platform)
	if err != nil {
		return Result{}, fmt.Errorf("import %s: %w", root, err)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(t.Docs[m.Digest], &manifest); err != nil {
		return Result{}, fmt.Errorf("import %s: manifest %s: %w", root, m.Digest, err)
	}
	c, err := client.New(opts.Address, client.WithDefaultNamespace(opts.Namespace))
	if err != nil {
		return Result{}, fmt.Errorf("containerd at %s: %w (set --containerd-address or CONTAINERD_ADDRESS)", opts.Address, err)
	}
	defer c.Close()
	ctx = namespaces.WithNamespace(ctx, opts.Namespace)
	// The lease keeps what is written from containerd's GC until the
	// image record names it.
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("containerd: %w", err)
	}
	defer done(context.WithoutCancel(ctx))

	im := importer{c: c, store: store, tree: t, opts: opts}
	config, err := im.readBlob(ctx, manifest.Config)
	if err != nil {
		return Result{}, err
	}
	if err := im.write(ctx, manifest.Config, config, nil); err != nil {
		return Result{}, err
	}
	if err := im.writeDocs(ctx, t.Top); err != nil {
		return Result{}, err
	}
	res := Result{Name: name, Target: t.Top}
	chain, err := im.unpack(ctx, root, name, m, manifest, config, &res)
	if err != nil {
		return res, err
	}
	// As containerd's unpacker does: the config holds the snapshots, and
	// the image holds the config.
	gcLabel := "containerd.io/gc.ref.snapshot." + opts.Snapshotter
	if _, err := c.ContentStore().Update(ctx, content.Info{Digest: manifest.Config.Digest, Labels: map[string]string{gcLabel: chain}}, "labels."+gcLabel); err != nil {
		return res, fmt.Errorf("containerd: label config: %w", err)
	}
	record := images.Image{Name: name, Target: t.Top, Labels: map[string]string{LabelRoot: root.String()}}
	is := c.ImageService()
	if _, err := is.Create(ctx, record); errdefs.IsAlreadyExists(err) {
		_, err = is.Update(ctx, record, "target", "labels."+LabelRoot)
		if err != nil {
			return res, fmt.Errorf("containerd: update image %s: %w", name, err)
		}
	} else if err != nil {
		return res, fmt.Errorf("containerd: create image %s: %w", name, err)
	}
	return res, nil
}

type importer struct {
	c     *client.Client
	store image.Store
	tree  *image.Tree
	opts  Options
}

// readBlob reads a small blob of the image whole, verified.
func (im importer) readBlob(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	if data, ok := im.tree.Docs[d.Digest]; ok {
		return data, nil
	}
	c, err := image.CIDOf(im.tree.Blobs[d.Digest])
	if err != nil {
		return nil, err
	}
	rc, err := im.store.Cat(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if int64(len(data)) != d.Size || d.Digest.Algorithm().FromBytes(data) != d.Digest {
		return nil, fmt.Errorf("blob %s (%s): content does not match its digest", d.Digest, c)
	}
	return data, nil
}

// write puts data into containerd's content store, labelled so that
// containerd's GC keeps children with it.
func (im importer) write(ctx context.Context, d ocispec.Descriptor, data []byte, children []ocispec.Descriptor) error {
	labels := map[string]string{}
	for i, child := range children {
		for _, key := range images.ChildGCLabels(child) {
			if strings.HasSuffix(key, ".") {
				key += strconv.Itoa(i)
			}
			labels[key] = child.Digest.String()
		}
	}
	err := content.WriteBlob(ctx, im.c.ContentStore(), "shoal-"+d.Digest.String(), strings.NewReader(string(data)), d, content.WithLabels(labels))
	if err != nil {
		return fmt.Errorf("containerd: write %s: %w", d.Digest, err)
	}
	return nil
}

// writeDocs writes the indexes and manifests under d, children first.
func (im importer) writeDocs(ctx context.Context, d ocispec.Descriptor) error {
	data, ok := im.tree.Docs[d.Digest]
	if !ok {
		return nil // a config or layer
	}
	var doc struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("document %s: %w", d.Digest, err)
	}
	children := doc.Manifests
	if doc.Config != nil {
		children = append([]ocispec.Descriptor{*doc.Config}, doc.Layers...)
	}
	for _, m := range doc.Manifests {
		if err := im.writeDocs(ctx, m); err != nil {
			return err
		}
	}
	return im.write(ctx, d, data, children)
}

// unpack prepares each layer's snapshot, and returns the image's chain ID.
func (im importer) unpack(ctx context.Context, root cid.Cid, name string, m ocispec.Descriptor, manifest ocispec.Manifest, config []byte, res *Result) (string, error) {
	var cfg ocispec.Image
	if err := json.Unmarshal(config, &cfg); err != nil {
		return "", fmt.Errorf("config %s: %w", manifest.Config.Digest, err)
	}
	diffs := cfg.RootFS.DiffIDs
	if len(diffs) != len(manifest.Layers) {
		return "", fmt.Errorf("config %s has %d diff IDs for %d layers", manifest.Config.Digest, len(diffs), len(manifest.Layers))
	}
	sn := im.c.SnapshotService(im.opts.Snapshotter)
	parent := ""
	for i, layer := range manifest.Layers {
		chain := identity.ChainID(diffs[:i+1]).String()
		if _, err := sn.Stat(ctx, chain); err == nil {
			parent = chain
			res.Lazy++
			continue
		}
		labels := map[string]string{
			snapshots.LabelSnapshotRef:             chain,
			snapshotter.LabelRoot:                  root.String(),
			snapshotters.TargetRefLabel:            name,
			snapshotters.TargetLayerDigestLabel:    layer.Digest.String(),
			snapshotters.TargetManifestDigestLabel: m.Digest.String(),
		}
		key := fmt.Sprintf("extract-%d-%s", time.Now().UnixNano(), chain)
		mounts, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(labels))
		switch {
		case errdefs.IsAlreadyExists(err):
			res.Lazy++
		case err != nil:
			return "", fmt.Errorf("snapshotter %s: prepare layer %s: %w", im.opts.Snapshotter, layer.Digest, err)
		default:
			if err := im.apply(ctx, sn, key, chain, layer, mounts); err != nil {
				return "", err
			}
			res.Unpacked++
		}
		parent = chain
	}
	return parent, nil
}

// apply unpacks a layer the snapshotter could not mount lazily: fetched
// from IPFS into containerd's content store, and applied by containerd.
func (im importer) apply(ctx context.Context, sn snapshots.Snapshotter, key, chain string, layer ocispec.Descriptor, mounts []mount.Mount) (err error) {
	defer func() {
		if err != nil {
			_ = sn.Remove(context.WithoutCancel(ctx), key)
		}
	}()
	c, err := image.CIDOf(im.tree.Blobs[layer.Digest])
	if err != nil {
		return err
	}
	rc, err := im.store.Cat(ctx, c)
	if err != nil {
		return fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	if err := content.WriteBlob(ctx, im.c.ContentStore(), "shoal-"+layer.Digest.String(), rc, layer); err != nil {
		return fmt.Errorf("containerd: write layer %s: %w", layer.Digest, err)
	}
	if _, err := im.c.DiffService().Apply(ctx, layer, mounts); err != nil {
		return fmt.Errorf("containerd: apply layer %s: %w", layer.Digest, err)
	}
	if err := sn.Commit(ctx, chain, key); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("snapshotter: commit layer %s: %w", layer.Digest, err)
	}
	return nil
}
