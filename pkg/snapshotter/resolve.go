package snapshotter

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"golang.org/x/sync/singleflight"
)

// LabelRoot names the image's root CID on the snapshots `shoal pull --to
// containerd` prepares. Other pulls (CRI, the transfer service) pass the
// image reference instead, in containerd's cri.* labels.
const LabelRoot = "containerd.io/snapshot/shoal.root"

// RootFinder finds the image CID of manifest d in repository name (the
// path of an image reference, without its registry): an ipfs/CID name, or
// an image shoal's registry converted.
type RootFinder func(ctx context.Context, name string, d digest.Digest) (cid.Cid, bool)

// NewResolver resolves the labels containerd gives a layer's snapshot
// (its digest, the image reference, the manifest digest) to the layer in
// the image's tree, read from store and kept for the image's other layers.
func NewResolver(store image.Store, timeout time.Duration, find RootFinder) Resolver {
	trees, _ := lru.New[cid.Cid, *image.Tree](16)
	var reading singleflight.Group
	tree := func(ctx context.Context, root cid.Cid) (*image.Tree, error) {
		if t, ok := trees.Get(root); ok {
			return t, nil
		}
		v, err, _ := reading.Do(root.KeyString(), func() (any, error) {
			t, err := image.ReadTree(ctx, store, root, timeout)
			if err == nil {
				trees.Add(root, t)
			}
			return t, err
		})
		if err != nil {
			return nil, err
		}
		return v.(*image.Tree), nil
	}
	return func(ctx context.Context, labels map[string]string) (ocispec.Descriptor, error) {
		layer, err := digest.Parse(labels[snapshotters.TargetLayerDigestLabel])
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("no layer digest in the labels (%v): %w", err, errdefs.ErrNotFound)
		}
		root, err := rootOf(ctx, labels, find)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		t, err := tree(ctx, root)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		d, ok := t.Blobs[layer]
		if !ok {
			return ocispec.Descriptor{}, fmt.Errorf("layer %s is not in image %s: %w", layer, root, errdefs.ErrNotFound)
		}
		if d.Annotations[layerindex.AnnotationIndex] == "" {
			return ocispec.Descriptor{}, fmt.Errorf("layer %s of %s has no index (`shoal index %s` adds them): %w", layer, root, root, errdefs.ErrNotFound)
		}
		return d, nil
	}
}

// rootOf finds the image CID the labels name.
func rootOf(ctx context.Context, labels map[string]string, find RootFinder) (cid.Cid, error) {
	if s := labels[LabelRoot]; s != "" {
		c, err := cid.Decode(s)
		if err != nil {
			return cid.Undef, fmt.Errorf("label %s: %w", LabelRoot, err)
		}
		return c, nil
	}
	ref := labels[snapshotters.TargetRefLabel]
	if ref == "" {
		return cid.Undef, fmt.Errorf("no image reference in the labels: %w", errdefs.ErrNotFound)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return cid.Undef, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrNotFound)
	}
	m, _ := digest.Parse(labels[snapshotters.TargetManifestDigestLabel])
	if root, ok := find(ctx, reference.Path(named), m); ok {
		return root, nil
	}
	return cid.Undef, fmt.Errorf("image %s is not on IPFS: %w", ref, errdefs.ErrNotFound)
}
