package lazyfs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Store is what a mount needs of a node: whole blobs for the image's
// documents and indexes, and parts of blobs for file contents.
type Store interface {
	image.Store
	store.ReaderAt
}

// DefaultReadTimeout bounds one read of file contents from peers: a read
// whose peers vanish fails (EIO) rather than hangs, and the mount goes on.
const DefaultReadTimeout = 30 * time.Second

// Image is an image opened for mounting.
type Image struct {
	Tree     *Tree
	Manifest ocispec.Descriptor
	Stats    *Stats
	layers   []*indexedLayer
	// FetchedWhole are the layers without an index, fetched whole when
	// the image was opened.
	FetchedWhole []ocispec.Descriptor
	// annotations of the image manifest.
	annotations map[string]string
}

// SetReadTimeout bounds each read of file contents (DefaultReadTimeout
// unless set).
func (im *Image) SetReadTimeout(d time.Duration) {
	for _, l := range im.layers {
		l.readTimeout = d
	}
}

// Close releases the layers' inflate state.
func (im *Image) Close() {
	for _, l := range im.layers {
		l.close()
	}
}

// OpenImage reads the image at root (the manifest for platform, when it
// is an index) and the index of every layer, and merges the layers'
// entries. Nothing of the indexed layers themselves is fetched; a layer
// without an index is fetched whole (openWholeLayer).
func OpenImage(ctx context.Context, store Store, root cid.Cid, platform ocispec.Platform, timeout time.Duration) (*Image, error) {
	t, err := image.ReadTree(ctx, store, root, timeout)
	if err != nil {
		return nil, err
	}
	m, err := t.Manifest(platform)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", root, err)
	}
	var doc ocispec.Manifest
	if err := jsonUnmarshal(t.Docs[m.Digest], &doc); err != nil {
		return nil, fmt.Errorf("mount %s: manifest %s: %w", root, m.Digest, err)
	}
	im := &Image{Manifest: m, Stats: &Stats{}, annotations: doc.Annotations}
	var layers []Layer
	for _, l := range doc.Layers {
		open := openLayer
		if l.Annotations[layerindex.AnnotationIndex] == "" {
			open = openWholeLayer
			im.FetchedWhole = append(im.FetchedWhole, l)
		}
		il, err := open(ctx, store, l, timeout)
		if err != nil {
			im.Close()
			return nil, fmt.Errorf("mount %s: %w", root, err)
		}
		if il.local == nil {
			il.ix.CountInto(&im.Stats.Stats)
		} else {
			// Fetched once, whole; its spans are read from the local tar.
			im.Stats.SpanBytes.Add(il.fetchedWhole)
		}
		im.Stats.ImageBytes.Add(l.Size)
		im.Stats.IndexBytes.Add(il.indexSize)
		im.layers = append(im.layers, il)
		layers = append(layers, il)
	}
	im.Tree = Merge(layers)
	return im, nil
}

// LayerFS is one layer opened alone, for a snapshotter that stacks
// layers with overlayfs: its Tree keeps whiteouts in overlayfs's form.
type LayerFS struct {
	Tree  *Tree
	Stats *Stats
	// Index is the CID of the layer's index, which a user of the layer
	// keeps: the mount cannot be rebuilt without it.
	Index cid.Cid
	layer *indexedLayer
}

// OpenLayer reads the index of layer l, a descriptor carrying its CID
// and index annotations. Nothing of the layer itself is fetched. The
// layer counts its reads in stats, which several layers may share (nil:
// its own).
func OpenLayer(ctx context.Context, store Store, l ocispec.Descriptor, timeout time.Duration, stats *Stats) (*LayerFS, error) {
	il, err := openLayer(ctx, store, l, timeout)
	if err != nil {
		return nil, err
	}
	if stats == nil {
		stats = &Stats{}
	}
	lf := &LayerFS{Tree: Overlay(il), Stats: stats, Index: il.index, layer: il}
	il.ix.CountInto(&lf.Stats.Stats)
	lf.Stats.ImageBytes.Add(l.Size)
	lf.Stats.IndexBytes.Add(il.indexSize)
	return lf, nil
}

// SetReadTimeout bounds each read of file contents (DefaultReadTimeout
// unless set).
func (l *LayerFS) SetReadTimeout(d time.Duration) { l.layer.readTimeout = d }

// Close releases the layer's inflate state.
func (l *LayerFS) Close() { l.layer.close() }

// indexedLayer reads a layer's files through its index, fetching only
// the spans a read touches.
type indexedLayer struct {
	ix          layerindex.Reader
	store       Store
	blob        cid.Cid
	windows     cid.Cid // a split index's windows; cid.Undef for others
	index       cid.Cid
	indexSize   int64
	readTimeout time.Duration
	// local is the unpacked tar of a layer without an index, fetched
	// whole (fetchedWhole bytes): reads come from it, not the store.
	local        *os.File
	fetchedWhole int64

	// Read-ahead: the span after a read's last one is loaded in the
	// background, so that a sequential reader finds it inflated.
	ahead     context.Context
	stopAhead context.CancelFunc
	loading   sync.Map // span ID → struct{}, loads in flight
	wg        sync.WaitGroup
}

func openLayer(ctx context.Context, store Store, l ocispec.Descriptor, timeout time.Duration) (*indexedLayer, error) {
	ref := l.Annotations[layerindex.AnnotationIndex]
	if ref == "" {
		return nil, fmt.Errorf("layer %s has no index; add them with `shoal index CID`", l.Digest)
	}
	ic, err := cid.Decode(strings.TrimPrefix(ref, image.URLScheme))
	if err != nil {
		return nil, fmt.Errorf("layer %s: index %q: %w", l.Digest, ref, err)
	}
	bc, err := image.CIDOf(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, max(timeout, DefaultReadTimeout))
	defer cancel()
	rc, err := store.Cat(ctx, ic)
	if err != nil {
		return nil, fmt.Errorf("layer %s: index %s: %w", l.Digest, ic, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, layerindex.MaxIndexSize+1))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("layer %s: index %s: %w", l.Digest, ic, err)
	}
	if len(data) > layerindex.MaxIndexSize {
		return nil, fmt.Errorf("layer %s: index %s is over %d bytes", l.Digest, ic, layerindex.MaxIndexSize)
	}
	format := l.Annotations[layerindex.AnnotationFormat]
	var wc cid.Cid
	if format == layerindex.FormatZTOCSplit {
		ref := l.Annotations[layerindex.AnnotationWindows]
		if wc, err = cid.Decode(strings.TrimPrefix(ref, image.URLScheme)); err != nil {
			return nil, fmt.Errorf("layer %s: index windows %q: %w", l.Digest, ref, err)
		}
	}
	ix, err := layerindex.Open(data, format, l.Size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	il := &indexedLayer{ix: ix, store: store, blob: bc, windows: wc, index: ic, indexSize: int64(len(data)), readTimeout: DefaultReadTimeout}
	il.ahead, il.stopAhead = context.WithCancel(context.WithoutCancel(ctx))
	return il, nil
}

func (l *indexedLayer) Entries() []layerindex.Entry { return l.ix.Entries() }

// contentID names the layer's content for the file cache.
func (l *indexedLayer) contentID() string { return l.blob.String() }

func (l *indexedLayer) ReadAt(ctx context.Context, e *layerindex.Entry, p []byte, off int64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, l.readTimeout)
	defer cancel()
	n, err := l.ix.ReadAt(ctx, l.source(ctx), e, p, off)
	if n > 0 && off+int64(n) < e.Size {
		// Only spans holding more of this file: a small file read whole
		// costs nothing more.
		for _, s := range l.ix.Spans(e, off+int64(n), min(e.Size-off-int64(n), readAheadBytes)) {
			l.loadAhead(s.ID)
		}
	}
	return n, err
}

// readAheadBytes is how far past a read its file's spans are loaded in
// the background: enough to keep a sequential reader and the fetching
// from peers busy at once (three spans of 2 MiB, twelve of 512 KiB), few
// enough to stay within the spans kept inflated.
const readAheadBytes = 6 << 20

// loadAhead loads span id in the background unless it is inflated or
// on its way already.
func (l *indexedLayer) loadAhead(id int) {
	if l.ix.Cached(id) || l.ahead.Err() != nil {
		return
	}
	if _, busy := l.loading.LoadOrStore(id, struct{}{}); busy {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.loading.Delete(id)
		ctx, cancel := context.WithTimeout(l.ahead, l.readTimeout)
		defer cancel()
		_ = l.ix.Load(l.source(ctx), id) // a failure shows when the span is read
	}()
}

// source reads the layer's blobs within ctx.
func (l *indexedLayer) source(ctx context.Context) layerindex.Source {
	if l.local != nil {
		return layerindex.Source{Layer: l.local}
	}
	src := layerindex.Source{Layer: store.BlobAt(ctx, l.store, l.blob)}
	if l.windows.Defined() {
		src.Windows = store.BlobAt(ctx, l.store, l.windows)
	}
	return src
}

func (l *indexedLayer) close() {
	l.stopAhead()
	l.wg.Wait()
	l.ix.Close()
	if l.local != nil {
		l.local.Close()
	}
}

// jsonUnmarshal parses a document of the image's tree.
func jsonUnmarshal(data []byte, v any) error {
	if data == nil {
		return fmt.Errorf("document not in the image's tree")
	}
	return json.Unmarshal(data, v)
}
