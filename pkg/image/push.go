package image

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"golang.org/x/sync/errgroup"
)

// Store is what conversion needs of a store (package store): the
// embedded node, a client of a running daemon or of kubo.
type Store interface {
	store.Adder
	store.Reader
	store.ReaderAt
	store.Pinner
}

// StoredSource is a source whose blobs may already be in the store, such
// as the registry's uploads: those are referenced by their CIDs, not read
// and added again.
type StoredSource interface {
	transport.Source
	StoredCID(d ocispec.Descriptor) (cid.Cid, bool)
}

// ChunkAdder is a store that can add a blob of given chunks, each a block
// of its own (blob.AddChunks): a split layer index's windows, so that a
// mount fetches the window of each span it reads and no other. A store
// without it gets indexes with the windows inline.
type ChunkAdder interface {
	AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error)
}

// HashingAdder is a store that can hand the SHA-256 digest of a blob it
// adds out of the pass that hashes the blob's leaves (blob.AddHashing):
// a push then reads and hashes each byte once, not once for the digest
// check and again for the CIDs.
type HashingAdder interface {
	AddHashing(ctx context.Context, r io.Reader, whole *sha256x.Stream) (cid.Cid, error)
}

// HashingCat is a store that can feed a blob's bytes to whole as it reads
// them, in the pass that verifies its blocks (node.Node.CatHashing): a
// pull then hashes each byte once, not once for the CIDs and again for
// the digest check.
type HashingCat interface {
	CatHashing(ctx context.Context, c cid.Cid, whole *sha256x.Stream) (io.ReadCloser, error)
}

// streamDigest is the OCI digest of the bytes whole was fed.
func streamDigest(whole *sha256x.Stream) digest.Digest {
	sum := whole.Sum()
	return digest.NewDigestFromBytes(digest.SHA256, sum[:])
}

// BlobFiles is a store that may keep a whole blob as one file (package
// packs): a pull links that file into a destination that can take links
// (transport.Linker) rather than writing the blob's bytes again.
type BlobFiles interface {
	BlobFile(ctx context.Context, c cid.Cid) (path string, size int64, ok bool, err error)
}

// Progress receives byte counts as a push or pull moves blobs.
type Progress interface {
	AddTotal(n int64)
	Add(n int64)
}

type noProgress struct{}

func (noProgress) AddTotal(int64) {}
func (noProgress) Add(int64)      {}

// PushOptions change a push.
type PushOptions struct {
	// Platforms keeps only these platforms of a multi-platform image; all
	// are kept when empty.
	Platforms []ocispec.Platform
	// Parallel is how many blobs are added at once.
	Parallel int
	// Index builds an index of every gzip or tar layer (package
	// layerindex) and names it in an annotation on the layer descriptor,
	// so that the image can be mounted lazily. Layers that are not tar
	// streams keep no index.
	Index bool
	// Attach pins these blobs with the image and names each, as
	// "ipfs://CID", in an annotation (the key) of every image manifest:
	// a prefetch list, say.
	Attach   map[string]cid.Cid
	Progress Progress
}

// Result is what a push or pull produced.
type Result struct {
	Root  cid.Cid
	Image catalog.Image
	// Descriptor is the image's top-level descriptor: for a push, as
	// stored, with its urls; for a pull, as written to the destination.
	Descriptor ocispec.Descriptor
	// Unindexed are the layers a push meant to index (PushOptions.Index)
	// and could not: a layer that is not a tar stream, or that inflates
	// past layerindex's bound. The image is whole without their indexes;
	// a lazy mount fetches those layers whole.
	Unindexed []Unindexed
}

// Unindexed is a layer left without an index, and why.
type Unindexed struct {
	Digest digest.Digest
	Err    error
}

// Push converts the image from src into the IPFS format, pins it and
// records it. Every blob read from src is verified against its digest.
func Push(ctx context.Context, store Store, src transport.Source, opts PushOptions) (Result, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 3
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	lease, err := TakeLease(ctx, store)
	if err != nil {
		return Result{}, fmt.Errorf("push %s: %w", src.Reference(), err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	p := &pusher{store: store, lease: lease, src: src, opts: opts, done: map[digest.Digest]cid.Cid{}, indexing: map[digest.Digest]*layerIndexing{}, converted: map[convertedKey][]byte{}}
	top, err := src.Root(ctx)
	if err != nil {
		return Result{}, err
	}
	converted, err := p.convert(ctx, top, 1)
	if err != nil {
		return Result{}, fmt.Errorf("push %s: %w", src.Reference(), err)
	}
	rootJSON, err := json.Marshal(converted)
	if err != nil {
		return Result{}, err
	}
	root, err := store.Add(ctx, bytes.NewReader(rootJSON))
	if err != nil {
		return Result{}, fmt.Errorf("push %s: add root: %w", src.Reference(), err)
	}
	img := catalog.Image{
		CID:       root.String(),
		Source:    src.Reference(),
		Platforms: p.platformList(),
		Size:      p.size,
		Created:   time.Now().UTC(),
		Blobs:     append([]string{root.String()}, p.cidList()...),
	}
	if err := store.PinImage(ctx, img); err != nil {
		return Result{}, fmt.Errorf("push %s: %w", src.Reference(), err)
	}
	return Result{Root: root, Image: img, Descriptor: converted, Unindexed: p.unindexed}, nil
}

type pusher struct {
	store Store
	lease Lease // spares what the push stores until it is pinned
	src   transport.Source
	opts  PushOptions

	mu        sync.Mutex
	done      map[digest.Digest]cid.Cid
	indexing  map[digest.Digest]*layerIndexing // layers indexed as they are added
	attached  []cid.Cid                        // blobs the source's annotations attach
	size      int64
	platforms []string
	// converted has each index and manifest converted so far, by its
	// digest in the source and whether its descriptor had a platform:
	// a document named many times is converted once, not once per path
	// to it, of which nested indexes can make exponentially many.
	converted map[convertedKey][]byte
	bounds    bounds
	unindexed []Unindexed
}

type convertedKey struct {
	digest   digest.Digest
	platform bool
}

// convert adds the blob of d, depth documents down from the top, and for
// an index or manifest first the blobs it names, and returns d as it
// appears in the converted image.
func (p *pusher) convert(ctx context.Context, d ocispec.Descriptor, depth int) (ocispec.Descriptor, error) {
	if a, changed := p.reachableAttachments(ctx, d.Annotations); changed {
		d.Annotations = a
	}
	if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
		return p.addBlob(ctx, d, nil)
	}
	key := convertedKey{d.Digest, d.Platform != nil}
	out, ok := p.converted[key]
	if !ok {
		var err error
		if out, err = p.convertDoc(ctx, d, depth); err != nil {
			return d, err
		}
		p.converted[key] = out
	} else if err := checkDepth(d, depth); err != nil {
		return d, err
	}
	nd := ocispec.Descriptor{
		MediaType:    d.MediaType,
		Digest:       digest.FromBytes(out),
		Size:         int64(len(out)),
		Platform:     d.Platform,
		Annotations:  d.Annotations,
		ArtifactType: d.ArtifactType,
	}
	return p.addBlob(ctx, nd, out)
}

// convertDoc converts index or manifest d, depth documents down from the
// top, and returns it as it is in the converted image.
func (p *pusher) convertDoc(ctx context.Context, d ocispec.Descriptor, depth int) ([]byte, error) {
	data, err := p.readSmall(ctx, d, maxManifestSize)
	if err != nil {
		return nil, err
	}
	if err := p.bounds.add(d, int64(len(data)), depth); err != nil {
		return nil, err
	}
	doc, err := ParseDocument(d.MediaType, data)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	if a, changed := p.reachableAttachments(ctx, doc.annotations()); changed {
		if err := doc.setAnnotations(a); err != nil {
			return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
	}
	if doc.Config == nil {
		var kept []ocispec.Descriptor
		for _, m := range doc.Manifests {
			if !platformMatches(p.opts.Platforms, m.Platform) {
				continue
			}
			nm, err := p.convert(ctx, m, depth+1)
			if err != nil {
				return nil, err
			}
			kept = append(kept, nm)
		}
		if len(kept) == 0 {
			return nil, fmt.Errorf("index %s: no manifest for the platforms asked for", d.Digest)
		}
		doc.Manifests = kept
	} else {
		cfg, err := p.readSmall(ctx, *doc.Config, maxConfigSize)
		if err != nil {
			return nil, err
		}
		p.addPlatform(platformOf(cfg))
		if len(p.opts.Platforms) > 0 && d.Platform == nil {
			if pl, err := ParsePlatform(platformOf(cfg)); err != nil || !platformMatches(p.opts.Platforms, &pl) {
				return nil, fmt.Errorf("image %s is %s, not a platform asked for", d.Digest, platformOf(cfg))
			}
		}
		c, err := p.addBlob(ctx, *doc.Config, cfg)
		if err != nil {
			return nil, err
		}
		doc.Config = &c
		layers := make([]ocispec.Descriptor, len(doc.Layers))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(p.opts.Parallel)
		for i, l := range doc.Layers {
			p.opts.Progress.AddTotal(l.Size)
			g.Go(func() error {
				if a, changed := p.reachableAttachments(gctx, l.Annotations); changed {
					l.Annotations = a
				}
				nl, err := p.addBlob(gctx, l, nil)
				if err == nil && p.opts.Index {
					err = p.indexLayer(gctx, &nl)
				}
				layers[i] = nl
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		doc.Layers = layers
		if len(p.opts.Attach) > 0 {
			kv := map[string]string{}
			for k, c := range p.opts.Attach {
				kv[k] = URLScheme + c.String()
			}
			if err := doc.annotate(kv); err != nil {
				return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
			}
		}
	}
	return doc.Marshal()
}

// readSmall reads a JSON document of the image whole, verified.
func (p *pusher) readSmall(ctx context.Context, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("blob %s: %d bytes is over the %d-byte limit for %s", d.Digest, d.Size, limit, d.MediaType)
	}
	rc, err := p.src.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	v, err := transport.NewVerifier(io.LimitReader(rc, limit+1), d)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(v)
}

// addBlob adds a blob, from data when given, else from the source, and
// returns its descriptor with the blob's CID in its urls.
func (p *pusher) addBlob(ctx context.Context, d ocispec.Descriptor, data []byte) (ocispec.Descriptor, error) {
	p.mu.Lock()
	c, seen := p.done[d.Digest]
	p.mu.Unlock()
	if seen {
		return WithCID(d, c), nil
	}
	if s, ok := p.src.(StoredSource); ok && data == nil {
		if c, ok := s.StoredCID(d); ok {
			p.record(d, c)
			return WithCID(d, c), nil
		}
	}
	var (
		r        io.Reader
		indexing *layerIndexing
		verifier *transport.Verifier
		whole    *sha256x.Stream // the digest, hashed with the leaves
	)
	if data != nil {
		v, err := transport.NewVerifier(bytes.NewReader(data), d)
		if err != nil {
			return d, err
		}
		r = v
	} else {
		rc, err := p.src.Open(ctx, d)
		if err != nil {
			return d, err
		}
		defer rc.Close()
		// Where the store hashes the digest with the leaves (on a CPU with
		// the SHA extensions, for little more than the leaves alone), the
		// reader checks only the size; elsewhere it hashes the bytes on
		// its own core as it reads ahead.
		newVerifier := transport.NewVerifier
		if _, ok := p.store.(HashingAdder); ok && sha256x.StreamAccelerated() && d.Digest.Algorithm() == digest.SHA256 {
			newVerifier = transport.NewSizeVerifier
			whole = sha256x.NewStream()
		}
		v, err := newVerifier(rc, d)
		if err != nil {
			return d, err
		}
		verifier = v
		ahead := readAhead(&countingReader{r: v, progress: p.opts.Progress})
		defer ahead.Close()
		r = ahead
		if indexing = p.startIndexing(ctx, d); indexing != nil {
			r = io.TeeReader(r, indexing)
		}
	}
	var err error
	if whole != nil {
		c, err = p.store.(HashingAdder).AddHashing(ctx, r, whole)
		if err == nil {
			err = verifier.Check(streamDigest(whole))
		}
	} else {
		c, err = p.store.Add(ctx, r)
	}
	if indexing != nil {
		indexing.end(c, err)
	}
	if err != nil {
		return d, fmt.Errorf("add blob %s: %w", d.Digest, err)
	}
	p.record(d, c)
	return WithCID(d, c), nil
}

func (p *pusher) record(d ocispec.Descriptor, c cid.Cid) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, seen := p.done[d.Digest]; !seen {
		p.done[d.Digest] = c
		p.size += d.Size
	}
}

// recordAttached records a blob shoal attaches to the image (a layer's
// index): pinned with it, but not part of the image's size, which is the
// OCI image's alone, the same on push and on pull.
func (p *pusher) recordAttached(d ocispec.Descriptor, c cid.Cid) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, seen := p.done[d.Digest]; !seen {
		p.done[d.Digest] = c
	}
}

// indexLayer adds the index of layer l, already in the store, and names
// it in l's annotations. A layer that has one keeps it; one that is not a
// tar stream gets none.
func (p *pusher) indexLayer(ctx context.Context, l *ocispec.Descriptor) error {
	if l.Annotations[layerindex.AnnotationIndex] != "" {
		return nil // kept, and reachable: see reachableAttachments
	}
	if _, err := layerindex.Compression(l.MediaType); err != nil {
		return nil
	}
	chunks, _ := p.store.(ChunkAdder)
	var built *layerindex.Built
	var err error
	if x := p.takeIndexing(l.Digest); x != nil {
		built, err = x.index()
	} else {
		built, err = p.indexStored(ctx, *l)
	}
	if ctx.Err() != nil || errors.Is(err, errLayerUnread) {
		return fmt.Errorf("index layer %s: %w", l.Digest, cmp.Or(ctx.Err(), err))
	}
	if err != nil {
		// Not a tar stream, or one past the bound: no index, and the
		// image works without one. The push goes on, and says so.
		p.mu.Lock()
		p.unindexed = append(p.unindexed, Unindexed{Digest: l.Digest, Err: err})
		p.mu.Unlock()
		return nil
	}
	ic, err := p.store.Add(ctx, bytes.NewReader(built.Index))
	if err != nil {
		return fmt.Errorf("add index of layer %s: %w", l.Digest, err)
	}
	p.recordAttached(ocispec.Descriptor{Digest: digest.FromBytes(built.Index), Size: int64(len(built.Index))}, ic)
	l.Annotations = maps.Clone(l.Annotations)
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	if built.Windows != nil {
		defer built.Windows.Close()
		windows := &hashedChunks{Chunks: built.Windows.Chunks(), h: sha256.New()}
		wc, err := chunks.AddChunks(ctx, windows)
		if err != nil {
			return fmt.Errorf("add index windows of layer %s: %w", l.Digest, err)
		}
		wd := digest.NewDigestFromBytes(digest.SHA256, windows.h.Sum(nil))
		p.recordAttached(ocispec.Descriptor{Digest: wd, Size: windows.n}, wc)
		l.Annotations[layerindex.AnnotationWindows] = URLScheme + wc.String()
	}

	l.Annotations[layerindex.AnnotationIndex] = URLScheme + ic.String()
	l.Annotations[layerindex.AnnotationFormat] = built.Format
	return nil
}

// buildOptions are the options of the push's layer indexes: windows apart
// where the store can add them as a blob of one block each.
func (p *pusher) buildOptions() layerindex.BuildOptions {
	_, canSplit := p.store.(ChunkAdder)
	return layerindex.BuildOptions{Inline: !canSplit}
}

// startIndexing starts indexing layer d as it is added; nil when it will
// not be indexed, or another manifest of the image is adding the same
// layer.
func (p *pusher) startIndexing(ctx context.Context, d ocispec.Descriptor) *layerIndexing {
	if !p.opts.Index {
		return nil
	}
	if _, err := layerindex.Compression(d.MediaType); err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.indexing[d.Digest]; ok {
		return nil
	}
	x := startIndexing(ctx, p.store, d, p.buildOptions())
	p.indexing[d.Digest] = x
	return x
}

// takeIndexing hands the indexing of layer d, if any, to the one
// manifest that names its index.
func (p *pusher) takeIndexing(d digest.Digest) *layerIndexing {
	p.mu.Lock()
	defer p.mu.Unlock()
	x := p.indexing[d]
	delete(p.indexing, d)
	return x
}

// hashedChunks hashes the chunks it gives, as one blob.
type hashedChunks struct {
	blob.Chunks
	h hash.Hash
	n int64
}

func (c *hashedChunks) Next() ([]byte, error) {
	b, err := c.Chunks.Next()
	c.h.Write(b)
	c.n += int64(len(b))
	return b, err
}

// errLayerUnread is a layer that could not be read back to index it.
var errLayerUnread = errors.New("layer not read back")

// indexStored indexes layer l from the store, for a layer the push did
// not add (the source had it stored).
func (p *pusher) indexStored(ctx context.Context, l ocispec.Descriptor) (*layerindex.Built, error) {
	c, err := CIDOf(l)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLayerUnread, err)
	}
	rc, err := catKept(ctx, p.store, p.lease, c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLayerUnread, err)
	}
	defer rc.Close()
	whole := func() (io.ReaderAt, error) { return store.BlobAt(ctx, p.store, c), nil }
	return layerindex.BuildFrom(unreadErrors{rc}, l.MediaType, l.Size, p.buildOptions(), whole)
}

// unreadErrors marks the errors of reading a layer back, to tell them
// from what indexing finds wrong with the layer.
type unreadErrors struct{ r io.Reader }

func (u unreadErrors) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errLayerUnread, err)
	}
	return n, err
}

func (p *pusher) addPlatform(s string) {
	if s == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.platforms, s) {
		p.platforms = append(p.platforms, s)
	}
}

func (p *pusher) platformList() []string {
	out := append([]string{}, p.platforms...)
	sort.Strings(out)
	return out
}

// reachableAttachments keeps the annotations that attach blobs (layer
// indexes, prefetch lists) whose blobs can be read, to pin them with the
// image, and drops the others: an image copied out of shoal and pushed
// elsewhere may name blobs nobody here has. A dropped layer index is built
// again.
func (p *pusher) reachableAttachments(ctx context.Context, a map[string]string) (map[string]string, bool) {
	var out map[string]string
	changed := false
	for k, v := range a {
		cs := attachments(map[string]string{k: v})
		if len(cs) == 1 && !p.reachable(ctx, cs[0]) {
			changed = true
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
		if len(cs) == 1 {
			p.mu.Lock()
			p.attached = append(p.attached, cs[0])
			p.mu.Unlock()
		}
	}
	if changed && (out[layerindex.AnnotationIndex] == "" ||
		out[layerindex.AnnotationFormat] == layerindex.FormatZTOCSplit && out[layerindex.AnnotationWindows] == "") {
		// An index is built again whole.
		delete(out, layerindex.AnnotationIndex)
		delete(out, layerindex.AnnotationFormat)
		delete(out, layerindex.AnnotationWindows)
	}
	return out, changed
}

// reachable reports whether blob c can be read within a few seconds.
func (p *pusher) reachable(ctx context.Context, c cid.Cid) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rc, err := catKept(ctx, p.store, p.lease, c)
	if err != nil {
		return false
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err == nil
}

func (p *pusher) cidList() []string {
	var out []string
	for _, c := range p.done {
		out = append(out, c.String())
	}
	extra := slices.Clone(p.attached)
	for _, c := range p.opts.Attach {
		extra = append(extra, c)
	}
	for _, c := range extra {
		if !slices.Contains(out, c.String()) {
			out = append(out, c.String())
		}
	}
	sort.Strings(out)
	return out
}

type countingReader struct {
	r        io.Reader
	progress Progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.progress.Add(int64(n))
	return n, err
}
