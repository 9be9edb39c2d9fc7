package image

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// Node is one blob of an image's tree, as `shoal inspect` shows it.
type Node struct {
	Role        string            `json:"Role"` // root, index, manifest, config or layer
	MediaType   string            `json:"MediaType"`
	Digest      string            `json:"Digest,omitempty"`
	Size        int64             `json:"Size"`
	CID         string            `json:"CID"`
	Platform    *ocispec.Platform `json:"Platform,omitempty"`
	Children    []*Node           `json:"Children,omitempty"`
	Annotations map[string]string `json:"Annotations,omitempty"`
}

// Inspect reads the tree of the image at root: root → index → manifests →
// config and layers. Index and manifest blobs are fetched and verified;
// config and layer blobs are only described. It gives up when nothing has
// arrived for timeout (zero: never).
func Inspect(ctx context.Context, store Store, root cid.Cid, timeout time.Duration) (*Node, error) {
	ctx, kick, stop := IdleTimeout(ctx, timeout)
	defer stop()
	p := &puller{store: store, lease: noLease{}, kick: kick, seen: map[cid.Cid]bool{}}
	data, err := p.readRoot(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", root, explainTimeout(ctx, err, timeout))
	}
	top, err := ParseRoot(data)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %s is %w", root, root, err)
	}
	child, err := p.inspect(ctx, top)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", root, explainTimeout(ctx, err, timeout))
	}
	return &Node{Role: "root", MediaType: "application/json", Size: int64(len(data)), CID: root.String(), Children: []*Node{child}}, nil
}

func (p *puller) inspect(ctx context.Context, d ocispec.Descriptor) (*Node, error) {
	c, err := CIDOf(d)
	if err != nil {
		return nil, err
	}
	n := &Node{MediaType: d.MediaType, Digest: d.Digest.String(), Size: d.Size, CID: c.String(), Platform: d.Platform, Annotations: d.Annotations}
	switch {
	case transport.IsIndex(d.MediaType):
		n.Role = "index"
	case transport.IsManifest(d.MediaType):
		n.Role = "manifest"
	default:
		return n, nil
	}
	data, err := p.readVerified(ctx, c, d, maxManifestSize)
	if err != nil {
		return nil, err
	}
	doc, err := ParseDocument(d.MediaType, data)
	if err != nil {
		return nil, fmt.Errorf("manifest %s (%s): %w", d.Digest, c, err)
	}
	children := doc.Manifests
	if doc.Config != nil {
		children = append([]ocispec.Descriptor{*doc.Config}, doc.Layers...)
	}
	for i, cd := range children {
		cn, err := p.inspect(ctx, cd)
		if err != nil {
			return nil, err
		}
		if doc.Config != nil {
			cn.Role = "layer"
			if i == 0 {
				cn.Role = "config"
			}
		}
		n.Children = append(n.Children, cn)
	}
	return n, nil
}
