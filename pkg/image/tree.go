package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// Tree is what a registry needs to serve an image by its root CID: the
// top-level descriptor, the bytes of every index and manifest, and the
// descriptor of every blob, all by digest.
//
// It holds the image twice. Top is the image as stored, its descriptors
// carrying ipfs:// urls. Plain is the same image without those urls: its
// configs and layers are the same blobs, its indexes and manifests are
// rewritten. Clients that copy images (skopeo, podman, CRI-O) take a layer
// with urls for a foreign layer and skip it, so registries serve Plain.
type Tree struct {
	Root  cid.Cid
	Top   ocispec.Descriptor
	Plain ocispec.Descriptor
	Docs  map[digest.Digest][]byte
	// Blobs has every blob of both views, documents included; those of
	// Top and the configs and layers carry their CIDs.
	Blobs map[digest.Digest]ocispec.Descriptor
	// CIDs is every blob of the image as stored, the root and attached
	// blobs included: what a node holding the image keeps.
	CIDs []cid.Cid
}

// ReadTree reads the indexes and manifests of the image at root, each
// verified against its digest, without fetching configs or layers. It
// gives up when nothing has arrived for timeout (zero: never).
func ReadTree(ctx context.Context, store Store, root cid.Cid, timeout time.Duration) (*Tree, error) {
	ctx, kick, stop := IdleTimeout(ctx, timeout)
	defer stop()
	p := &puller{store: store, lease: noLease{}, kick: kick, seen: map[cid.Cid]bool{}}
	data, err := p.readRoot(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", root, explainTimeout(ctx, err, timeout))
	}
	top, err := ParseRoot(data)
	if err != nil {
		return nil, fmt.Errorf("read %s: %s is %w", root, root, err)
	}
	if err := p.walk(ctx, top, 1); err != nil {
		return nil, fmt.Errorf("read %s: %w", root, explainTimeout(ctx, err, timeout))
	}
	t := &Tree{Root: root, Top: top, Docs: map[digest.Digest][]byte{}, Blobs: map[digest.Digest]ocispec.Descriptor{}, CIDs: []cid.Cid{root}}
	for _, s := range p.cids {
		c, err := cid.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", root, err)
		}
		t.CIDs = append(t.CIDs, c)
	}
	for _, d := range p.docs {
		t.Docs[d.desc.Digest] = d.data
		t.Blobs[d.desc.Digest] = d.desc
	}
	for _, d := range p.blobs {
		t.Blobs[d.Digest] = d
	}
	if t.Plain, err = t.plain(top, map[digest.Digest]ocispec.Descriptor{}); err != nil {
		return nil, fmt.Errorf("read %s: %w", root, err)
	}
	return t, nil
}

// plainDocs is the image under top without shoal's urls: its top-level
// descriptor, and its indexes and manifests rewritten, one for each of
// docs (which hold every document under top).
func plainDocs(top ocispec.Descriptor, docs []docBlob) (ocispec.Descriptor, []docBlob, error) {
	t := &Tree{Docs: map[digest.Digest][]byte{}, Blobs: map[digest.Digest]ocispec.Descriptor{}}
	for _, d := range docs {
		t.Docs[d.desc.Digest] = d.data
	}
	done := map[digest.Digest]ocispec.Descriptor{}
	plainTop, err := t.plain(top, done)
	if err != nil {
		return top, nil, err
	}
	out := make([]docBlob, 0, len(docs))
	for _, d := range docs {
		p, ok := done[d.desc.Digest]
		if !ok {
			return top, nil, fmt.Errorf("document %s is not under %s", d.desc.Digest, top.Digest)
		}
		out = append(out, docBlob{desc: ocispec.Descriptor{MediaType: d.desc.MediaType, Digest: p.Digest, Size: p.Size}, data: t.Docs[p.Digest]})
	}
	return plainTop, out, nil
}

// plain returns d without shoal's urls, and for an index or manifest adds
// the rewritten document to the tree. A document is rewritten once
// however many times the image names it: done has the digest and size
// of each rewritten so far, by its digest as stored. Without it, indexes
// naming the same index many times would be rewritten once per path,
// exponentially many.
func (t *Tree) plain(d ocispec.Descriptor, done map[digest.Digest]ocispec.Descriptor) (ocispec.Descriptor, error) {
	var urls []string
	for _, u := range d.URLs {
		if !strings.HasPrefix(u, URLScheme) {
			urls = append(urls, u)
		}
	}
	d.URLs = urls
	data, ok := t.Docs[d.Digest]
	if !ok {
		return d, nil
	}
	if p, ok := done[d.Digest]; ok {
		d.Digest, d.Size = p.Digest, p.Size
		return d, nil
	}
	stored := d.Digest
	doc, err := ParseDocument(d.MediaType, data)
	if err != nil {
		return d, err
	}
	for _, list := range [][]ocispec.Descriptor{doc.Manifests, doc.Layers} {
		for i := range list {
			if list[i], err = t.plain(list[i], done); err != nil {
				return d, err
			}
		}
	}
	if doc.Config != nil {
		if *doc.Config, err = t.plain(*doc.Config, done); err != nil {
			return d, err
		}
	}
	out, err := doc.Marshal()
	if err != nil {
		return d, err
	}
	d.Digest, d.Size = digest.FromBytes(out), int64(len(out))
	done[stored] = ocispec.Descriptor{Digest: d.Digest, Size: d.Size}
	t.Docs[d.Digest] = out
	if _, ok := t.Blobs[d.Digest]; !ok {
		t.Blobs[d.Digest] = d
	}
	return d, nil
}

// AddIndexes converts the image at root again with an index for every
// layer that lacks one (an image pushed by nerdctl, say) and the attached
// blobs (PushOptions.Attach), pins the result and returns it: a new root,
// since the descriptors change. Layer blobs are referenced, not copied.
func AddIndexes(ctx context.Context, store Store, root cid.Cid, timeout time.Duration, attach map[string]cid.Cid) (Result, error) {
	t, err := ReadTree(ctx, store, root, timeout)
	if err != nil {
		return Result{}, err
	}
	return Push(ctx, store, &treeSource{t: t, store: store}, PushOptions{Index: true, Attach: attach})
}

// treeSource reads an image already in IPFS as a push source.
type treeSource struct {
	t     *Tree
	store Store
}

func (s *treeSource) Reference() string                                { return URLScheme + s.t.Root.String() }
func (s *treeSource) Root(context.Context) (ocispec.Descriptor, error) { return s.t.Top, nil }
func (s *treeSource) Close() error                                     { return nil }

func (s *treeSource) Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if data, ok := s.t.Docs[d.Digest]; ok {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	c, err := CIDOf(d)
	if err != nil {
		return nil, err
	}
	return s.store.Cat(ctx, c)
}

func (s *treeSource) StoredCID(d ocispec.Descriptor) (cid.Cid, bool) {
	if _, doc := s.t.Docs[d.Digest]; doc {
		return cid.Undef, false
	}
	c, err := CIDOf(d)
	return c, err == nil
}

// Manifest finds the image's manifest for a platform (the variant
// matters only when want has one). An image that is a lone manifest is
// taken as it is.
func (t *Tree) Manifest(want ocispec.Platform) (ocispec.Descriptor, error) {
	return t.manifestUnder(t.Top, want)
}

func (t *Tree) manifestUnder(d ocispec.Descriptor, want ocispec.Platform) (ocispec.Descriptor, error) {
	if transport.IsManifest(d.MediaType) {
		return d, nil
	}
	var idx ocispec.Index
	data, ok := t.Docs[d.Digest]
	if !ok {
		return d, fmt.Errorf("index %s is not in the image's tree", d.Digest)
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return d, fmt.Errorf("index %s: %w", d.Digest, err)
	}
	var seen []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		seen = append(seen, formatPlatform(*m.Platform))
		if platformMatches([]ocispec.Platform{want}, m.Platform) {
			if transport.IsIndex(m.MediaType) {
				return t.manifestUnder(m, want)
			}
			return m, nil
		}
	}
	return d, fmt.Errorf("no manifest for %s in the image (it has %s); choose one with --platform", formatPlatform(want), strings.Join(seen, ", "))
}
