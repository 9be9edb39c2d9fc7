package image_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// handMade adds the documents of images made by hand to a store, and
// keeps their bytes for a push source.
type handMade struct {
	t     *testing.T
	store image.Store
	blobs map[digest.Digest][]byte
	// config and layer are those of every manifest.
	config, layer ocispec.Descriptor
}

// newHandMade makes documents in a store in memory.
func newHandMade(t *testing.T) (*memstore.Store, *handMade) {
	n := memstore.New()
	return n, &handMade{t: t, store: n, blobs: map[digest.Digest][]byte{}}
}

func (h *handMade) add(mediaType string, v any) ocispec.Descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	d := testimage.AddBlob(h.t, h.store, mediaType, data, digest.FromBytes(data))
	h.blobs[d.Digest] = data
	return d
}

// manifest has layers copies of one layer, and note as an annotation
// (which tells manifests apart, or pads one).
func (h *handMade) manifest(layers int, note string) ocispec.Descriptor {
	if h.config.Digest == "" {
		h.config = h.add(ocispec.MediaTypeImageConfig, map[string]string{"os": "linux", "architecture": "amd64"})
		h.layer = h.add(ocispec.MediaTypeImageLayer, "not really a layer")
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: h.config, Annotations: map[string]string{"note": note}}
	m.Layers = repeat(h.layer, layers)
	return h.add(ocispec.MediaTypeImageManifest, m)
}

func (h *handMade) index(entries ...ocispec.Descriptor) ocispec.Descriptor {
	return h.add(ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: entries})
}

func repeat(d ocispec.Descriptor, n int) []ocispec.Descriptor {
	out := make([]ocispec.Descriptor, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// nest puts d under depth-1 indexes of one entry each.
func (h *handMade) nest(d ocispec.Descriptor, depth int) ocispec.Descriptor {
	for range depth - 1 {
		d = h.index(d)
	}
	return d
}

// TestImagesPastTheDocumentBoundsAreRefused: an image read from IPFS (a
// pull, the registry's ipfs/CID) or converted (a push) with more
// manifests in an index, layers in a manifest, nesting, or documents in
// all than shoal's bounds is refused with an error that says which.
func TestImagesPastTheDocumentBoundsAreRefused(t *testing.T) {
	ctx := context.Background()
	n, h := newHandMade(t)
	one := h.manifest(1, "")
	var many []ocispec.Descriptor
	for i := range image.MaxDocuments {
		many = append(many, h.manifest(1, fmt.Sprint(i)))
	}
	for _, c := range []struct {
		name string
		top  ocispec.Descriptor
		ok   bool
	}{
		{"a manifest of the most layers", h.manifest(image.MaxManifestLayers, ""), true},
		{"a manifest of one layer more", h.manifest(image.MaxManifestLayers+1, ""), false},
		{"an index of the most manifests", h.index(repeat(one, image.MaxIndexManifests)...), true},
		{"an index of one manifest more", h.index(repeat(one, image.MaxIndexManifests+1)...), false},
		{"indexes nested the deepest", h.nest(one, image.MaxDepth), true},
		{"indexes nested one deeper", h.nest(one, image.MaxDepth+1), false},
		{"more documents than the most", h.index(h.index(many[:700]...), h.index(many[700:1400]...), h.index(many[1400:]...)), false},
		{"documents of more bytes than the most", h.index(func() (out []ocispec.Descriptor) {
			for i := range image.MaxDocumentBytes/(4<<20) + 1 {
				out = append(out, h.manifest(1, fmt.Sprint(i)+strings.Repeat("x", 4<<20-1000)))
			}
			return out
		}()...), false},
	} {
		root := testimage.AddRoot(t, n, c.top)
		_, err := image.ReadTree(ctx, n, root, 10*time.Second)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, image.ErrOverBounds)) {
			t.Errorf("%s, read: %v", c.name, err)
		}
		_, err = image.Push(ctx, n, &handSource{h: h, top: c.top}, image.PushOptions{})
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, image.ErrOverBounds)) {
			t.Errorf("%s, pushed: %v", c.name, err)
		}
	}
}

// TestSharedDocumentsAreRewrittenOnce: an image whose indexes name the
// same index or manifest many times is read in about the time of its
// distinct documents, not of every path through them.
func TestSharedDocumentsAreRewrittenOnce(t *testing.T) {
	ctx := context.Background()
	n, h := newHandMade(t)
	d := h.manifest(1, "")
	for range image.MaxDepth - 1 {
		d = h.index(repeat(d, image.MaxIndexManifests)...)
	}
	root := testimage.AddRoot(t, n, d)
	for what, do := range map[string]func() error{
		"reading": func() error {
			_, err := image.ReadTree(ctx, n, root, 10*time.Second)
			return err
		},
		"pushing": func() error {
			_, err := image.Push(ctx, n, &handSource{h: h, top: d}, image.PushOptions{})
			return err
		},
	} {
		done := make(chan error, 1)
		go func() { done <- do() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s an image of %d documents, each named %d times, takes over a minute", what, image.MaxDepth, image.MaxIndexManifests)
		}
	}
}

// handSource is a push source of the hand-made documents.
type handSource struct {
	h   *handMade
	top ocispec.Descriptor
}

func (s *handSource) Reference() string                                { return "hand-made" }
func (s *handSource) Root(context.Context) (ocispec.Descriptor, error) { return s.top, nil }
func (s *handSource) Close() error                                     { return nil }
func (s *handSource) Open(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	data, ok := s.h.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: not hand-made", d.Digest)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// TestLayerPastTheInflateBoundIsPushedWithoutAnIndex: a gzip layer that
// inflates past layerindex's bound is pushed, as it is a valid layer,
// without an index; the push says which layer and why.
func TestLayerPastTheInflateBoundIsPushedWithoutAnIndex(t *testing.T) {
	ctx := context.Background()
	n, h := newHandMade(t)
	// Members of a MiB of zeros each, about a KiB compressed, to past
	// the bound for their compressed size.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	count := layerindex.MaxInflateBase/(1<<20-layerindex.MaxInflateRatio*int64(member.Len())) + 1
	bomb := bytes.Repeat(member.Bytes(), int(count))
	layer := testimage.AddBlob(t, n, ocispec.MediaTypeImageLayerGzip, bomb, digest.FromBytes(bomb))
	h.blobs[layer.Digest] = bomb
	h.manifest(0, "") // the config
	h.layer = layer
	top := h.manifest(1, "")
	res, err := image.Push(ctx, n, &handSource{h: h, top: top}, image.PushOptions{Index: true})
	if err != nil {
		t.Fatalf("push of a layer that inflates %d-fold: %v", 1<<20/member.Len(), err)
	}
	if len(res.Unindexed) != 1 || res.Unindexed[0].Digest != layer.Digest || !errors.Is(res.Unindexed[0].Err, layerindex.ErrInflatesPastBound) {
		t.Errorf("layers without an index: %+v, want %s for %v", res.Unindexed, layer.Digest, layerindex.ErrInflatesPastBound)
	}
}
