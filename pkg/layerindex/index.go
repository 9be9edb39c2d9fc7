// Package layerindex builds and reads the index of a layer: every entry's
// metadata, and checkpoints into the compressed stream so that any byte
// range of any file can be read from the layer blob without the rest of
// it.
//
// The index is a zTOC, soci-snapshotter's format for random access into
// unmodified gzip (and uncompressed) tar layers, stored as a blob in IPFS
// and named by an annotation on the layer's descriptor; the layer blob and
// its digest are untouched. A gzip layer's zTOC keeps its inflate windows
// apart (FormatZTOCSplit), eStargz and zstd:chunked layers are indexed by
// their own TOC (FormatEStargz).
package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	"github.com/containerd/errdefs"
	lru "github.com/hashicorp/golang-lru/v2"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"golang.org/x/sync/singleflight"
)

// Annotations on a layer descriptor that name its index.
const (
	// AnnotationIndex is "ipfs://CID" of the layer's index.
	AnnotationIndex = "io.shoal.layer.index"
	// AnnotationFormat says what the index blob is: FormatZTOC or
	// FormatEStargz.
	AnnotationFormat = "io.shoal.layer.index.format"
	// FormatZTOC is a zTOC serialised with flatbuffers, gzip-compressed:
	// the inflate windows in its checkpoints shrink about fourfold.
	FormatZTOC = "ztoc+gzip"
	// FormatZTOCSplit is FormatZTOC with the inflate windows in a blob of
	// their own, named by AnnotationWindows (split.go).
	FormatZTOCSplit = "ztoc-split+gzip"
	// AnnotationWindows is "ipfs://CID" of a split zTOC's windows.
	AnnotationWindows = "io.shoal.layer.index.windows"
)

// Source is what a reader reads a layer's bytes from: the layer blob, and
// the windows blob of a split zTOC (nil for other formats), both bound to
// one read's context.
type Source struct {
	Layer, Windows io.ReaderAt
}

// Reader reads a layer's files through an index of it: its entries, and
// any byte range of a regular file from the layer blob, fetching only the
// spans (runs of the blob decompressed as one) that hold it.
type Reader interface {
	// Entries are the layer's entries in tar order.
	Entries() []Entry
	// ReadAt reads file e's bytes at off; every span is checked against
	// the index's digests before use, so an index that does not belong
	// to the blob never yields wrong bytes.
	ReadAt(ctx context.Context, src Source, e *Entry, p []byte, off int64) (int, error)
	// Spans lists the spans holding bytes [off, off+n) of file e.
	Spans(e *Entry, off, n int64) []Span
	// Load reads span id ahead of a read that will want it; Cached
	// reports whether it is in memory.
	Load(src Source, id int) error
	Cached(id int) bool
	// CountInto makes the reader count its span loads in s.
	CountInto(s *Stats)
	// Close releases what the reader keeps.
	Close()
}

// Open reads an index blob of the given format for a layer of layerSize
// bytes.
func Open(data []byte, format string, layerSize int64) (Reader, error) {
	switch format {
	case FormatZTOC:
		return parseZTOC(data, layerSize, false)
	case FormatZTOCSplit:
		return parseZTOC(data, layerSize, true)
	case FormatEStargz:
		return parseTOCIndex(data, layerSize)
	}
	return nil, fmt.Errorf("layer index format %q is not one shoal reads (%s, %s, %s)", format, FormatZTOCSplit, FormatZTOC, FormatEStargz)
}

// Span sizes, the uncompressed distance between checkpoints. A read
// costs fetching and inflating the spans it touches, each checkpoint of a
// gzip layer a 32 KiB inflate window, about 13 KiB compressed. Kept in
// the index, windows are fetched whole at mount, and 2 MiB was the
// measured best of 1, 2 and 4; kept apart, only the windows of the spans
// read are, and 512 KiB is the best of 2 MiB down to 256 KiB
// (docs/lazy.md).
const (
	DefaultSpanSize       = 512 << 10
	DefaultInlineSpanSize = 2 << 20
)

// MaxIndexSize bounds an index blob read whole.
const MaxIndexSize = 64 << 20

// ErrUnsupported is returned for layers whose compression has no index.
var ErrUnsupported = errkind.New("layer compression not supported by the index", errdefs.ErrNotImplemented)

// Compression returns the zTOC compression algorithm of a layer media type.
func Compression(mediaType string) (string, error) {
	switch {
	case strings.HasSuffix(mediaType, "tar+gzip"), mediaType == transport.MediaTypeDockerLayer:
		return compression.Gzip, nil
	case strings.HasSuffix(mediaType, ".tar"), mediaType == ocispec.MediaTypeImageLayer:
		return compression.Uncompressed, nil
	case strings.HasSuffix(mediaType, "tar+zstd"):
		return compression.Zstd, nil // only zstd:chunked, which has a TOC
	}
	return "", fmt.Errorf("%w: %s", ErrUnsupported, mediaType)
}

// Bounds on what a layer inflates to. Indexing a gzip layer, and reading
// a layer without an index whole, inflate all of it; deflate can expand
// its input 1032-fold, so a small crafted layer (a gzip bomb) would have
// a push index terabytes, and keep an inflate window in memory for every
// span of them. Real layers of files inflate a few times their size; a
// layer holding mostly empty space (a large file of zeros) can go past
// the bound, and is then used without an index.
const (
	MaxInflateRatio = 100
	MaxInflateBase  = 1 << 30
)

// MaxTarSize is the bound on the tar stream of a layer of compressed
// bytes unless BuildOptions say otherwise: MaxInflateRatio times the
// compressed size plus MaxInflateBase.
func MaxTarSize(compressed int64) int64 {
	if compressed > (math.MaxInt64-MaxInflateBase)/MaxInflateRatio {
		return math.MaxInt64
	}
	return MaxInflateBase + MaxInflateRatio*max(compressed, 0)
}

// ErrInflatesPastBound is the error of a layer whose tar stream is larger
// than its bound.
var ErrInflatesPastBound = errkind.New("layer inflates past its bound", errdefs.ErrOutOfRange)

// inflateBound reads an inflated stream and fails once it has given more
// than max bytes.
type inflateBound struct {
	r         io.Reader
	left, max int64
}

func (b *inflateBound) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err()
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		b.left = -1
		return 0, b.err()
	}
	b.left -= int64(n)
	return n, err
}

func (b *inflateBound) err() error {
	return fmt.Errorf("%w: over %d bytes inflated", ErrInflatesPastBound, b.max)
}

// BuildOptions change how a layer is indexed.
type BuildOptions struct {
	// SpanSize is the uncompressed distance between a zTOC's checkpoints;
	// 0 picks the format's default.
	SpanSize int64
	// Inline keeps a gzip layer's inflate windows in its zTOC
	// (FormatZTOC) rather than apart, for a store that cannot add them as
	// a blob of one block per window.
	Inline bool
	// MaxTarSize bounds the layer's tar stream, inflated; 0 is
	// MaxTarSize of the layer's size. A layer past it gets
	// ErrInflatesPastBound.
	MaxTarSize int64
}

// Built is a layer's index.
type Built struct {
	Index  []byte
	Format string
	// Windows are a split zTOC's compressed windows, in span order: to
	// store as one blob, each window a block of its own (nil for other
	// formats). The caller closes them.
	Windows *Windows
}

// Uncompress returns the tar stream of a layer of the given media type
// read from r, which fails with ErrInflatesPastBound past maxTar bytes.
func Uncompress(r io.Reader, mediaType string, maxTar int64) (io.ReadCloser, error) {
	algo, err := Compression(mediaType)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	switch algo {
	case compression.Gzip:
		if rc, err = kgzip.NewReader(r); err != nil {
			return nil, err
		}
	case compression.Zstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		rc = zr.IOReadCloser()
	default:
		rc = io.NopCloser(r)
	}
	return struct {
		io.Reader
		io.Closer
	}{&inflateBound{r: rc, left: maxTar, max: maxTar}, rc}, nil
}

// Build indexes the layer blob in file, of the given media type. An
// eStargz or zstd:chunked layer is indexed by its own TOC
// (FormatEStargz), any other gzip layer by a split zTOC (FormatZTOCSplit,
// or FormatZTOC if o.Inline), and an uncompressed tar layer, which has no
// windows, by a zTOC.
func Build(file, mediaType string, o BuildOptions) (*Built, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if built, err := buildFromOwnTOC(f, fi.Size(), mediaType); built != nil || err != nil {
		return built, err
	}
	built, _, err := buildZTOC(f, fi.Size(), mediaType, o)
	return built, err
}

// BuildFrom indexes a layer of size bytes as Build does, in one pass as r
// gives the layer's bytes (a push indexes a layer while it adds it). A
// layer that may carry a TOC of its own (zstd, or a gzip tar holding
// eStargz's) is then read through the ReaderAt whole returns, which BuildFrom
// calls only once r has given the whole layer.
func BuildFrom(r io.Reader, mediaType string, size int64, o BuildOptions, whole func() (io.ReaderAt, error)) (*Built, error) {
	algo, err := Compression(mediaType)
	if err != nil {
		return nil, err
	}
	var built *Built
	mayHaveTOC := algo == compression.Zstd
	if !mayHaveTOC {
		if built, mayHaveTOC, err = buildZTOC(r, size, mediaType, o); err != nil || !mayHaveTOC {
			return built, err
		}
	}
	at, err := whole()
	if err != nil {
		if built != nil {
			built.Windows.Close()
		}
		return nil, fmt.Errorf("index layer: %w", err)
	}
	if own, err := buildFromOwnTOC(at, size, mediaType); own != nil || err != nil {
		if built != nil {
			built.Windows.Close()
		}
		return own, err
	}
	return built, nil
}

// buildFromOwnTOC indexes an eStargz or zstd:chunked layer of size bytes
// read from f by its TOC; nil and no error for a layer without one, which
// a zTOC indexes unless it is zstd.
func buildFromOwnTOC(f io.ReaderAt, size int64, mediaType string) (*Built, error) {
	algo, err := Compression(mediaType)
	if err != nil {
		return nil, err
	}
	if algo == compression.Uncompressed {
		return nil, nil
	}
	data, err := buildFromTOC(f, size, algo)
	switch {
	case err == nil:
		return &Built{Index: data, Format: FormatEStargz}, nil
	case !errors.Is(err, errNoTOC):
		return nil, fmt.Errorf("index layer: %w", err)
	case algo == compression.Zstd:
		return nil, fmt.Errorf("%w: zstd without a zstd:chunked TOC (one frame cannot be read from the middle)", ErrUnsupported)
	}
	return nil, nil
}

// buildZTOC builds the zTOC of a gzip or tar layer of size bytes read
// from r, and says whether the tar holds an eStargz TOC.
func buildZTOC(r io.Reader, size int64, mediaType string, o BuildOptions) (*Built, bool, error) {
	algo, err := Compression(mediaType)
	if err != nil {
		return nil, false, err
	}
	split := algo == compression.Gzip && !o.Inline
	span := o.SpanSize
	if span <= 0 {
		span = DefaultSpanSize
		if !split {
			span = DefaultInlineSpanSize
		}
	}
	maxTar := o.MaxTarSize
	if maxTar <= 0 {
		maxTar = MaxTarSize(size)
	}
	return buildZTOCFrom(r, size, algo, span, split, maxTar)
}

// gzipIndex compresses an index as it is stored, at gzip's default level:
// the best level costs half a second more on the Debian layer's zTOC for
// an index 1.3% smaller.
func gzipIndex(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	zw := kgzip.NewWriter(&out)
	if _, err := io.Copy(zw, r); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// checkpointTable maps a zTOC's spans to offsets: soci's zinfo, or a
// split zTOC's table.
type checkpointTable interface {
	MaxSpanID() compression.SpanID
	UncompressedOffsetToSpanID(compression.Offset) compression.SpanID
	StartCompressedOffset(compression.SpanID) compression.Offset
	EndCompressedOffset(compression.SpanID, compression.Offset) compression.Offset
	StartUncompressedOffset(compression.SpanID) compression.Offset
	EndUncompressedOffset(compression.SpanID, compression.Offset) compression.Offset
	Close()
}

// Index is a layer's zTOC, opened for reading the layer's files.
type Index struct {
	zt *ztoc.Ztoc
	cp checkpointTable
	// Either zinfo, soci's, which holds the windows, or split, whose
	// windows are read from Source.Windows.
	zinfo   compression.Zinfo
	split   *splitTable
	entries []Entry
	spans   *spanCache
	mu      sync.Mutex // guards checked and the inflate state
	stats   *Stats
	// checked spans matched their digest once; the blob's bytes are
	// addressed by content, so a span read again is the same.
	checked map[compression.SpanID]bool
}

// Stats count what reads through indexes cost. One Stats may serve many
// indexes (the layers of a mount).
type Stats struct {
	SpanLoads   atomic.Int64 // spans read from the blob and inflated
	SpanHits    atomic.Int64 // span reads served from memory
	SpanBytes   atomic.Int64 // compressed bytes read from blobs, windows included
	LoadNanos   atomic.Int64 // time spent loading spans
	MaxLoadNano atomic.Int64 // the slowest span load
}

// loaded counts a span load of n compressed bytes that took d.
func (s *Stats) loaded(n int, d time.Duration) {
	s.SpanBytes.Add(int64(n))
	s.SpanLoads.Add(1)
	s.LoadNanos.Add(d.Nanoseconds())
	for cur := s.MaxLoadNano.Load(); d.Nanoseconds() > cur && !s.MaxLoadNano.CompareAndSwap(cur, d.Nanoseconds()); cur = s.MaxLoadNano.Load() {
	}
}

// CountInto makes the index count its span reads in s.
func (ix *Index) CountInto(s *Stats) { ix.stats = s }

// inflateIndex undoes the gzip both index formats are stored with, up to
// MaxIndexSize bytes.
func inflateIndex(data []byte) ([]byte, error) {
	zr, err := kgzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxIndexSize+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxIndexSize {
		return nil, fmt.Errorf("over %d bytes inflated", MaxIndexSize)
	}
	return raw, nil
}

// parseZTOC reads a serialised zTOC, split or not, and checks that it
// describes a layer of the given size.
func parseZTOC(data []byte, layerSize int64, split bool) (*Index, error) {
	raw, err := inflateIndex(data)
	if err != nil {
		return nil, fmt.Errorf("layer index: %w", err)
	}
	zt, err := ztoc.Unmarshal(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("layer index: %w", err)
	}
	if int64(zt.CompressedArchiveSize) != layerSize {
		return nil, fmt.Errorf("layer index describes a %d-byte layer, not %d bytes", zt.CompressedArchiveSize, layerSize)
	}
	if len(zt.SpanDigests) != int(zt.MaxSpanID)+1 {
		return nil, fmt.Errorf("layer index: %d span digests for %d spans", len(zt.SpanDigests), zt.MaxSpanID+1)
	}
	// An empty tar has no span (MaxSpanID -1).
	spanSize := int64(zt.UncompressedArchiveSize) / max(int64(zt.MaxSpanID)+1, 1)
	ix := &Index{zt: zt, stats: &Stats{}, checked: map[compression.SpanID]bool{}, spans: newSpanCache(spanSize)}
	if split {
		if zt.CompressionAlgorithm != compression.Gzip {
			return nil, fmt.Errorf("layer index: a split zTOC of a %q layer", zt.CompressionAlgorithm)
		}
		ix.split, err = parseSplitTable(zt.Checkpoints, len(zt.SpanDigests), layerSize, int64(zt.UncompressedArchiveSize))
		if err != nil {
			return nil, fmt.Errorf("layer index: %w", err)
		}
		ix.cp = ix.split
	} else {
		if ix.zinfo, err = zt.Zinfo(); err != nil {
			return nil, fmt.Errorf("layer index: %w", err)
		}
		ix.cp = ix.zinfo
	}
	for _, m := range zt.FileMetadata {
		e, err := entryOf(m, zt.UncompressedArchiveSize)
		if err != nil {
			ix.cp.Close()
			return nil, err
		}
		ix.entries = append(ix.entries, e)
	}
	return ix, nil
}

var types = map[string]byte{
	"reg": tar.TypeReg, "hardlink": tar.TypeLink, "symlink": tar.TypeSymlink, "dir": tar.TypeDir,
	"char": tar.TypeChar, "block": tar.TypeBlock, "fifo": tar.TypeFifo,
}

func entryOf(m ztoc.FileMetadata, total compression.Offset) (Entry, error) {
	t, ok := types[m.Type]
	if !ok {
		return Entry{}, fmt.Errorf("layer index: %s: unknown type %q", m.Name, m.Type)
	}
	if m.UncompressedOffset < 0 || m.UncompressedSize < 0 || m.UncompressedOffset+m.UncompressedSize > total {
		return Entry{}, fmt.Errorf("layer index: %s: bytes [%d, +%d) outside the %d-byte tar", m.Name, m.UncompressedOffset, m.UncompressedSize, total)
	}
	e := Entry{
		Name: m.Name, Type: t, Mode: m.Mode, UID: m.UID, GID: m.GID,
		ModTime: m.ModTime, Linkname: m.Linkname, Devmajor: m.Devmajor, Devminor: m.Devminor,
		Offset: int64(m.UncompressedOffset),
	}
	if t == tar.TypeReg {
		e.Size = int64(m.UncompressedSize)
	}
	if x := m.Xattrs(); len(x) > 0 {
		e.Xattrs = maps.Clone(x)
	}
	return e, nil
}

// Entries are the layer's entries in tar order.
func (ix *Index) Entries() []Entry { return ix.entries }

// Close releases the inflate state.
func (ix *Index) Close() { ix.cp.Close() }

// ReadAt reads file e's bytes at off from the layer blob, fetching and
// inflating only the spans they are in. Every span's compressed bytes are
// checked against the index's digest for it before use, so an index that
// does not belong to the blob never yields wrong bytes.
func (ix *Index) ReadAt(ctx context.Context, src Source, e *Entry, p []byte, off int64) (int, error) {
	if off >= e.Size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), e.Size-off)
	pos := e.Offset + off
	done := int64(0)
	for done < n {
		if err := ctx.Err(); err != nil {
			return int(done), err
		}
		id := ix.cp.UncompressedOffsetToSpanID(compression.Offset(pos + done))
		span, err := ix.span(src, id)
		if err != nil {
			return int(done), err
		}
		start := int64(ix.cp.StartUncompressedOffset(id))
		k := copy(p[done:n], span[pos+done-start:])
		if k == 0 {
			return int(done), fmt.Errorf("layer index: span %d ends before offset %d", id, pos+done)
		}
		done += int64(k)
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

// span returns the uncompressed bytes of span id.
func (ix *Index) span(src Source, id compression.SpanID) ([]byte, error) {
	return ix.spans.get(int(id), ix.stats, func() ([]byte, error) { return ix.load(src, id) })
}

// spanCache keeps the last spans a reader decompressed. Spans load in
// parallel (read-ahead keeps several in flight), and one span loads once
// however many readers want it.
type spanCache struct {
	kept   *lru.Cache[int, []byte]
	flight singleflight.Group
}

// A span is inflated whole into memory: one bigger than maxSpanBytes, or
// than deflate can expand its compressed bytes to (1032:1), comes from an
// index that is wrong, not from a layer.
const (
	maxSpanBytes    = 64 << 20
	maxDeflateRatio = 1032
)

// spanCacheBytes is about how much a reader keeps inflated: 8 spans of
// 2 MiB, 32 of 512 KiB.
const spanCacheBytes = 16 << 20

// newSpanCache keeps spans of about spanSize bytes.
func newSpanCache(spanSize int64) *spanCache {
	kept, _ := lru.New[int, []byte](int(max(8, min(256, spanCacheBytes/max(spanSize, 1)))))
	return &spanCache{kept: kept}
}

// get returns span id, loading it if it is not kept; it counts hits into
// stats.
func (c *spanCache) get(id int, stats *Stats, load func() ([]byte, error)) ([]byte, error) {
	if b, ok := c.kept.Get(id); ok {
		stats.SpanHits.Add(1)
		return b, nil
	}
	v, err, shared := c.flight.Do(strconv.Itoa(id), func() (any, error) {
		if b, ok := c.kept.Get(id); ok {
			return b, nil
		}
		b, err := load()
		if err == nil {
			c.kept.Add(id, b)
		}
		return b, err
	})
	if err != nil {
		return nil, err
	}
	if shared {
		stats.SpanHits.Add(1)
	}
	return v.([]byte), nil
}

func (c *spanCache) contains(id int) bool { return c.kept.Contains(id) }

// load reads span id's compressed bytes, checks them and inflates them.
// A split zTOC's window is read at the same time, so that a span missing
// here costs one round trip to a peer, not two.
func (ix *Index) load(src Source, id compression.SpanID) ([]byte, error) {
	start := time.Now()
	cStart := ix.cp.StartCompressedOffset(id)
	cEnd := ix.cp.EndCompressedOffset(id, ix.zt.CompressedArchiveSize)
	uStart := ix.cp.StartUncompressedOffset(id)
	uEnd := ix.cp.EndUncompressedOffset(id, ix.zt.UncompressedArchiveSize)
	if cEnd < cStart || uEnd < uStart || cEnd > ix.zt.CompressedArchiveSize || uEnd-uStart > maxSpanBytes ||
		(ix.zt.CompressionAlgorithm == compression.Gzip && int64(uEnd-uStart) > maxDeflateRatio*int64(cEnd-cStart+1)) {
		return nil, fmt.Errorf("layer index: span %d has impossible bounds", id)
	}
	var window []byte
	var windowErr error
	windowRead := make(chan struct{})
	if ix.split != nil {
		go func() {
			defer close(windowRead)
			window, windowErr = ix.split.window(src.Windows, id)
		}()
	} else {
		close(windowRead)
	}
	buf := make([]byte, cEnd-cStart)
	_, err := src.Layer.ReadAt(buf, int64(cStart))
	<-windowRead
	if err != nil && !(errors.Is(err, io.EOF) && len(buf) > 0) {
		return nil, fmt.Errorf("read span %d of the layer: %w", id, err)
	}
	ix.mu.Lock()
	checked := ix.checked[id]
	ix.mu.Unlock()
	if want := ix.zt.SpanDigests[id]; !checked && digest.FromBytes(buf) != want {
		return nil, fmt.Errorf("layer index: span %d of the layer does not match the index (%s): refusing the index", id, want)
	}
	ix.mu.Lock()
	ix.checked[id] = true
	ix.mu.Unlock()
	if windowErr != nil {
		return nil, fmt.Errorf("layer index: %w", windowErr)
	}
	var data []byte
	if ix.split != nil {
		data, err = ix.split.inflate(buf, window, id, uEnd-uStart)
	} else {
		// soci's zinfo keeps one inflate state for all checkpoints.
		ix.mu.Lock()
		data, err = ix.zinfo.ExtractDataFromBuffer(buf, uEnd-uStart, uStart, id)
		ix.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("inflate span %d: %w", id, err)
	}
	if int64(len(data)) != int64(uEnd-uStart) {
		return nil, fmt.Errorf("inflate span %d: %d bytes, want %d", id, len(data), uEnd-uStart)
	}
	n := len(buf)
	if ix.split != nil {
		n += ix.split.points[id].wlen
	}
	ix.stats.loaded(n, time.Since(start))
	return data, nil
}

// Cached reports whether span id is inflated in memory.
func (ix *Index) Cached(id int) bool { return ix.spans.contains(id) }

// Load reads and inflates span id ahead of a read that will want it.
func (ix *Index) Load(src Source, id int) error {
	if id < 0 || id > int(ix.zt.MaxSpanID) {
		return nil
	}
	_, err := ix.span(src, compression.SpanID(id))
	return err
}

// Span is a span of the layer: its ID and its bytes in the compressed blob.
type Span struct {
	ID         int
	Start, End int64 // [Start, End) of the blob
}

// Spans lists the spans holding bytes [off, off+n) of file e, to fetch
// them ahead of reads.
func (ix *Index) Spans(e *Entry, off, n int64) []Span {
	if off >= e.Size || n <= 0 {
		return nil
	}
	n = min(n, e.Size-off)
	first := ix.cp.UncompressedOffsetToSpanID(compression.Offset(e.Offset + off))
	last := ix.cp.UncompressedOffsetToSpanID(compression.Offset(e.Offset + off + n - 1))
	var out []Span
	for id := first; id <= last; id++ {
		out = append(out, Span{
			ID:    int(id),
			Start: int64(ix.cp.StartCompressedOffset(id)),
			End:   int64(ix.cp.EndCompressedOffset(id, ix.zt.CompressedArchiveSize)),
		})
	}
	return out
}
