// Package image converts OCI and Docker images to shoal's image format on
// IPFS and back.
//
// The format is nerdctl's: every blob is a UnixFS file; every descriptor
// carries "urls": ["ipfs://CID"] for its blob; the top-level descriptor,
// itself with its urls, is serialised as JSON and added as one more blob
// whose CID is the image's CID. Layer and config digests never change, so
// every OCI digest still verifies in any client.
package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// URLScheme prefixes the CIDs in descriptor urls.
const URLScheme = "ipfs://"

// Size limits for the JSON documents of an image, which are read whole.
const (
	maxRootSize     = 64 << 10
	maxManifestSize = 4 << 20
	maxConfigSize   = 8 << 20
)

// ErrNotImage is returned for a CID or document that is not part of an image.
var ErrNotImage = errkind.New("not an image", errdefs.ErrInvalidArgument)

// checkDepth checks document d, found depth documents down from the top.
func checkDepth(d ocispec.Descriptor, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: %s is nested %d documents deep, more than %d", ErrOverBounds, d.Digest, depth, MaxDepth)
	}
	return nil
}

// Bounds on an image's documents. An image is read whole before any blob
// of it moves, its indexes and manifests held in memory (and, for the
// registry's ipfs/CID, rewritten and cached); the image is someone
// else's, and without bounds a few small blocks could name millions of
// documents, or nest them without end. Real images are far inside them:
// a multi-platform index names tens of manifests, a manifest tens of
// layers, and nesting stops at two.
const (
	// MaxIndexManifests bounds the entries of one index.
	MaxIndexManifests = 1000
	// MaxManifestLayers bounds the layers of one manifest.
	MaxManifestLayers = 1000
	// MaxDepth bounds the documents from the top of an image down to a
	// manifest: index, index, index, manifest.
	MaxDepth = 4
	// MaxDocuments bounds the indexes and manifests of one image.
	MaxDocuments = 2048
	// MaxDocumentBytes bounds their bytes together.
	MaxDocumentBytes = 32 << 20
)

// ErrOverBounds is the error of an image past one of the bounds above.
var ErrOverBounds = errkind.New("image past shoal's bounds", errdefs.ErrOutOfRange)

// bounds counts an image's documents as a walk down it reads them.
type bounds struct {
	docs  int
	bytes int64
}

// add counts document d, of size bytes, found depth documents down from
// the top. A document named again is counted once, where it is first
// found, as a walk reads it once.
func (b *bounds) add(d ocispec.Descriptor, size int64, depth int) error {
	if err := checkDepth(d, depth); err != nil {
		return err
	}
	b.docs++
	b.bytes += size
	switch {
	case b.docs > MaxDocuments:
		return fmt.Errorf("%w: more than %d indexes and manifests", ErrOverBounds, MaxDocuments)
	case b.bytes > MaxDocumentBytes:
		return fmt.Errorf("%w: indexes and manifests of more than %d bytes together", ErrOverBounds, MaxDocumentBytes)
	}
	return nil
}

// CIDOf returns the CID in a descriptor's first ipfs:// url.
func CIDOf(d ocispec.Descriptor) (cid.Cid, error) {
	for _, u := range d.URLs {
		if s, ok := strings.CutPrefix(u, URLScheme); ok {
			c, err := cid.Decode(s)
			if err != nil {
				return cid.Undef, fmt.Errorf("descriptor %s: url %q: %w", d.Digest, u, err)
			}
			return c, nil
		}
	}
	return cid.Undef, fmt.Errorf("descriptor %s: %w: no ipfs:// url", d.Digest, ErrNotImage)
}

// WithCID returns d with its blob's CID as its first url; any other ipfs://
// url is dropped and other urls are kept.
func WithCID(d ocispec.Descriptor, c cid.Cid) ocispec.Descriptor {
	urls := []string{URLScheme + c.String()}
	for _, u := range d.URLs {
		if !strings.HasPrefix(u, URLScheme) {
			urls = append(urls, u)
		}
	}
	d.URLs = urls
	return d
}

// ParseRoot parses the root blob of an image: a descriptor of an index or
// a manifest that names its blob's CID.
func ParseRoot(data []byte) (ocispec.Descriptor, error) {
	var d ocispec.Descriptor
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("%w: root is not an OCI descriptor: %v", ErrNotImage, err)
	}
	if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
		return d, fmt.Errorf("%w: root descriptor has media type %q, want an index or a manifest", ErrNotImage, d.MediaType)
	}
	if err := transport.CheckDescriptor(d); err != nil {
		return d, fmt.Errorf("%w: root: %v", ErrNotImage, err)
	}
	if _, err := CIDOf(d); err != nil {
		return d, err
	}
	return d, nil
}

// document is an index or manifest kept as raw JSON, so that fields shoal
// does not know survive conversion.
type document struct {
	raw       map[string]json.RawMessage
	Manifests []ocispec.Descriptor // index entries
	Config    *ocispec.Descriptor  // manifest config
	Layers    []ocispec.Descriptor // manifest layers
}

// ParseDocument parses an index or manifest of the given media type and
// checks every descriptor in it.
func ParseDocument(mediaType string, data []byte) (*document, error) {
	doc := &document{}
	if err := json.Unmarshal(data, &doc.raw); err != nil {
		return nil, fmt.Errorf("%s: %w", mediaType, err)
	}
	var typed struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []ocispec.Descriptor `json:"manifests"`
		Config        *ocispec.Descriptor  `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(data, &typed); err != nil {
		return nil, fmt.Errorf("%s: %w", mediaType, err)
	}
	if typed.SchemaVersion != 2 {
		return nil, fmt.Errorf("%s: schemaVersion %d, want 2", mediaType, typed.SchemaVersion)
	}
	if typed.MediaType != "" && typed.MediaType != mediaType {
		return nil, fmt.Errorf("document says media type %q, its descriptor %q", typed.MediaType, mediaType)
	}
	if len(typed.Manifests) > MaxIndexManifests {
		return nil, fmt.Errorf("%w: an index of %d manifests, more than %d", ErrOverBounds, len(typed.Manifests), MaxIndexManifests)
	}
	if len(typed.Layers) > MaxManifestLayers {
		return nil, fmt.Errorf("%w: a manifest of %d layers, more than %d", ErrOverBounds, len(typed.Layers), MaxManifestLayers)
	}
	var all []ocispec.Descriptor
	switch {
	case transport.IsIndex(mediaType):
		doc.Manifests = typed.Manifests
		all = typed.Manifests
	case transport.IsManifest(mediaType):
		if typed.Config == nil {
			return nil, fmt.Errorf("%s: no config", mediaType)
		}
		doc.Config, doc.Layers = typed.Config, typed.Layers
		all = append([]ocispec.Descriptor{*typed.Config}, typed.Layers...)
	default:
		return nil, fmt.Errorf("media type %q is neither an index nor a manifest", mediaType)
	}
	for _, d := range all {
		if err := transport.CheckDescriptor(d); err != nil {
			return nil, fmt.Errorf("%s: %w", mediaType, err)
		}
	}
	return doc, nil
}

// AttachmentPrefix starts the annotations through which shoal attaches
// blobs to an image (layer indexes, prefetch lists): an annotation with
// this prefix whose value is "ipfs://CID" names a blob that pulls fetch
// and pin with the image, so that every node holding the image can serve
// them.
const AttachmentPrefix = "io.shoal."

// attachments lists the CIDs that annotations attach.
func attachments(annotations map[string]string) []cid.Cid {
	var out []cid.Cid
	for k, v := range annotations {
		if !strings.HasPrefix(k, AttachmentPrefix) {
			continue
		}
		if s, ok := strings.CutPrefix(v, URLScheme); ok {
			if c, err := cid.Decode(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// annotations returns the document's own annotations.
func (doc *document) annotations() map[string]string {
	a := map[string]string{}
	if raw, ok := doc.raw["annotations"]; ok {
		_ = json.Unmarshal(raw, &a)
	}
	return a
}

// setAnnotations replaces the document's own annotations.
func (doc *document) setAnnotations(a map[string]string) error {
	if len(a) == 0 {
		delete(doc.raw, "annotations")
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	doc.raw["annotations"] = b
	return nil
}

// annotate sets annotations of the document itself.
func (doc *document) annotate(kv map[string]string) error {
	a := map[string]string{}
	if raw, ok := doc.raw["annotations"]; ok {
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("annotations: %w", err)
		}
	}
	for k, v := range kv {
		a[k] = v
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	doc.raw["annotations"] = b
	return nil
}

// Marshal writes the document back with its descriptors as they are now.
func (doc *document) Marshal() ([]byte, error) {
	set := func(key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		doc.raw[key] = b
		return nil
	}
	if doc.Config != nil {
		if err := set("config", doc.Config); err != nil {
			return nil, err
		}
		if err := set("layers", doc.Layers); err != nil {
			return nil, err
		}
	} else if err := set("manifests", doc.Manifests); err != nil {
		return nil, err
	}
	return json.Marshal(doc.raw)
}

// platformOf reads "os/arch[/variant]" from an image config.
func platformOf(config []byte) string {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if json.Unmarshal(config, &c) != nil || c.OS == "" {
		return ""
	}
	return formatPlatform(ocispec.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant})
}

func formatPlatform(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses os/arch[/variant].
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func platformMatches(want []ocispec.Platform, have *ocispec.Platform) bool {
	if len(want) == 0 {
		return true
	}
	if have == nil {
		return false
	}
	for _, w := range want {
		if w.OS == have.OS && w.Architecture == have.Architecture && (w.Variant == "" || w.Variant == have.Variant) {
			return true
		}
	}
	return false
}
