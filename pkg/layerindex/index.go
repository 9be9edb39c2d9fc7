// Package layerindex builds and reads the index of a layer: every entry's
// metadata, and checkpoints into the compressed stream so that any byte
// range of any file can be read from the layer blob without the rest of
// it.
//
// The index is a zTOC, soci-snapshotter's format for random access into
// unmodified gzip (and uncompressed) tar layers, stored as a blob in IPFS
// and named by an annotation on the layer's descriptor; the layer blob and
// its digest are untouched.
package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	lru "github.com/hashicorp/golang-lru/v2"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"golang.org/x/sync/errgroup"
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
	// the inflate windows in its checkpoints shrink about fourfold, and
	// the index is most of what a lazy start fetches.
	FormatZTOC = "ztoc+gzip"
)

// Reader reads a layer's files through an index of it: its entries, and
// any byte range of a regular file from the layer blob, fetching only the
// spans (runs of the blob decompressed as one) that hold it.
type Reader interface {
	// Entries are the layer's entries in tar order.
	Entries() []Entry
	// ReadAt reads file e's bytes at off; every span is checked against
	// the index's digests before use, so an index that does not belong
	// to the blob never yields wrong bytes.
	ReadAt(ctx context.Context, blob io.ReaderAt, e *Entry, p []byte, off int64) (int, error)
	// Spans lists the spans holding bytes [off, off+n) of file e.
	Spans(e *Entry, off, n int64) []Span
	// Load reads span id ahead of a read that will want it; Cached
	// reports whether it is in memory.
	Load(blob io.ReaderAt, id int) error
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
		return Parse(data, layerSize)
	case FormatEStargz:
		return parseTOCIndex(data, layerSize)
	}
	return nil, fmt.Errorf("layer index format %q is not one shoal reads (%s, %s)", format, FormatZTOC, FormatEStargz)
}

// DefaultSpanSize is the uncompressed distance between checkpoints. Each
// checkpoint of a gzip layer costs 32 KiB of index (the inflate window);
// a read costs fetching and inflating the spans it touches. 2 MiB is
// the measured best of 1, 2 and 4 (docs/lazy.md).
const DefaultSpanSize = 2 << 20

// MaxIndexSize bounds an index blob read whole.
const MaxIndexSize = 64 << 20

// ErrUnsupported is returned for layers whose compression has no index.
var ErrUnsupported = errors.New("layer compression not supported by the index")

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

// Build indexes the layer blob in file, of the given media type, and
// returns the serialised index and its format. An eStargz or zstd:chunked
// layer is indexed by its own TOC (FormatEStargz); any other gzip or
// uncompressed tar layer gets a zTOC with checkpoints every span bytes
// (FormatZTOC).
func Build(file, mediaType string, span int64) (index []byte, format string, err error) {
	algo, err := Compression(mediaType)
	if err != nil {
		return nil, "", err
	}
	if algo != compression.Uncompressed {
		data, err := buildFromTOC(file, algo)
		if err == nil {
			return data, FormatEStargz, nil
		}
		if !errors.Is(err, errNoTOC) {
			return nil, "", fmt.Errorf("index layer: %w", err)
		}
		if algo == compression.Zstd {
			return nil, "", fmt.Errorf("%w: zstd without a zstd:chunked TOC (one frame cannot be read from the middle)", ErrUnsupported)
		}
	}
	data, err := buildZTOC(file, algo, span)
	if err != nil {
		return nil, "", err
	}
	return data, FormatZTOC, nil
}

// buildZTOC builds a zTOC of the layer in file.
//
// The two passes a zTOC takes, the table of contents (Go's tar over a
// fast inflater) and the checkpoints with their digests (zlib), run at
// the same time.
func buildZTOC(file, algo string, span int64) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	var info ztoc.CompressionInfo
	var toc ztoc.TOC
	var tarSize compression.Offset
	var g errgroup.Group
	g.Go(func() (err error) {
		info, err = checkpoints(file, algo, span, fi.Size())
		return err
	})
	g.Go(func() (err error) {
		tb := ztoc.NewTocBuilder()
		tb.RegisterTarProvider(compression.Gzip, func(f *os.File) (io.Reader, error) { return kgzip.NewReader(f) })
		tb.RegisterTarProvider(compression.Uncompressed, ztoc.TarProviderTar)
		toc, tarSize, err = tb.TocFromFile(algo, file)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("index layer: %w", err)
	}
	r, _, err := ztoc.Marshal(&ztoc.Ztoc{
		Version:                 ztoc.Version09,
		TOC:                     toc,
		CompressionInfo:         info,
		CompressedArchiveSize:   compression.Offset(fi.Size()),
		UncompressedArchiveSize: tarSize,
		BuildToolIdentifier:     "shoal",
	})
	if err != nil {
		return nil, fmt.Errorf("index layer: %w", err)
	}
	return gzipIndex(r)
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

// checkpoints builds the zinfo part of a zTOC: the inflate state every
// span bytes and the digest of each span's compressed bytes.
func checkpoints(file, algo string, span, size int64) (ztoc.CompressionInfo, error) {
	zi, err := compression.NewZinfoFromFile(algo, file, span)
	if err != nil {
		return ztoc.CompressionInfo{}, err
	}
	defer zi.Close()
	f, err := os.Open(file)
	if err != nil {
		return ztoc.CompressionInfo{}, err
	}
	defer f.Close()
	// Spans are hashed sixteen at a time (sha256x's lanes).
	var digests []digest.Digest
	for first := compression.SpanID(0); first <= zi.MaxSpanID(); first += 16 {
		var spans [][]byte
		for id := first; id <= min(first+15, zi.MaxSpanID()); id++ {
			start, end := zi.StartCompressedOffset(id), zi.EndCompressedOffset(id, compression.Offset(size))
			b := make([]byte, end-start)
			if _, err := f.ReadAt(b, int64(start)); err != nil {
				return ztoc.CompressionInfo{}, fmt.Errorf("span %d: %w", id, err)
			}
			spans = append(spans, b)
		}
		sums := make([][sha256.Size]byte, len(spans))
		sha256x.SumMany(spans, sums)
		for _, sum := range sums {
			digests = append(digests, digest.NewDigestFromBytes(digest.SHA256, sum[:]))
		}
	}
	cp, err := zi.Bytes()
	if err != nil {
		return ztoc.CompressionInfo{}, err
	}
	return ztoc.CompressionInfo{MaxSpanID: zi.MaxSpanID(), SpanDigests: digests, Checkpoints: cp, CompressionAlgorithm: algo}, nil
}

// Index is a layer's index, opened for reading the layer's files.
type Index struct {
	zt      *ztoc.Ztoc
	zinfo   compression.Zinfo
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
	SpanBytes   atomic.Int64 // compressed bytes read from blobs
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

// Parse reads a serialised index and checks that it describes a layer of
// the given size.
func Parse(data []byte, layerSize int64) (*Index, error) {
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
	zi, err := zt.Zinfo()
	if err != nil {
		return nil, fmt.Errorf("layer index: %w", err)
	}
	ix := &Index{zt: zt, zinfo: zi, stats: &Stats{}, checked: map[compression.SpanID]bool{}, spans: newSpanCache()}
	for _, m := range zt.FileMetadata {
		e, err := entryOf(m, zt.UncompressedArchiveSize)
		if err != nil {
			zi.Close()
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
func (ix *Index) Close() { ix.zinfo.Close() }

// ReadAt reads file e's bytes at off from the layer blob, fetching and
// inflating only the spans they are in. Every span's compressed bytes are
// checked against the index's digest for it before use, so an index that
// does not belong to the blob never yields wrong bytes.
func (ix *Index) ReadAt(ctx context.Context, blob io.ReaderAt, e *Entry, p []byte, off int64) (int, error) {
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
		id := ix.zinfo.UncompressedOffsetToSpanID(compression.Offset(pos + done))
		span, err := ix.span(blob, id)
		if err != nil {
			return int(done), err
		}
		start := int64(ix.zinfo.StartUncompressedOffset(id))
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
func (ix *Index) span(blob io.ReaderAt, id compression.SpanID) ([]byte, error) {
	return ix.spans.get(int(id), ix.stats, func() ([]byte, error) { return ix.load(blob, id) })
}

// spanCache keeps the last spans a reader decompressed. Spans load in
// parallel (read-ahead keeps several in flight), and one span loads once
// however many readers want it.
type spanCache struct {
	kept   *lru.Cache[int, []byte]
	flight singleflight.Group
}

func newSpanCache() *spanCache {
	kept, _ := lru.New[int, []byte](8)
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
func (ix *Index) load(blob io.ReaderAt, id compression.SpanID) ([]byte, error) {
	start := time.Now()
	cStart := ix.zinfo.StartCompressedOffset(id)
	cEnd := ix.zinfo.EndCompressedOffset(id, ix.zt.CompressedArchiveSize)
	uStart := ix.zinfo.StartUncompressedOffset(id)
	uEnd := ix.zinfo.EndUncompressedOffset(id, ix.zt.UncompressedArchiveSize)
	if cEnd < cStart || uEnd < uStart || cEnd > ix.zt.CompressedArchiveSize {
		return nil, fmt.Errorf("layer index: span %d has impossible bounds", id)
	}
	buf := make([]byte, cEnd-cStart)
	if _, err := blob.ReadAt(buf, int64(cStart)); err != nil && !(errors.Is(err, io.EOF) && len(buf) > 0) {
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
	// zlib's inflate state for the checkpoints is shared: one at a time.
	data, err := ix.zinfo.ExtractDataFromBuffer(buf, uEnd-uStart, uStart, id)
	ix.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("inflate span %d: %w", id, err)
	}
	if int64(len(data)) != int64(uEnd-uStart) {
		return nil, fmt.Errorf("inflate span %d: %d bytes, want %d", id, len(data), uEnd-uStart)
	}
	ix.stats.loaded(len(buf), time.Since(start))
	return data, nil
}

// Cached reports whether span id is inflated in memory.
func (ix *Index) Cached(id int) bool { return ix.spans.contains(id) }

// Load reads and inflates span id ahead of a read that will want it.
func (ix *Index) Load(blob io.ReaderAt, id int) error {
	if id < 0 || id > int(ix.zt.MaxSpanID) {
		return nil
	}
	_, err := ix.span(blob, compression.SpanID(id))
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
	first := ix.zinfo.UncompressedOffsetToSpanID(compression.Offset(e.Offset + off))
	last := ix.zinfo.UncompressedOffsetToSpanID(compression.Offset(e.Offset + off + n - 1))
	var out []Span
	for id := first; id <= last; id++ {
		out = append(out, Span{
			ID:    int(id),
			Start: int64(ix.zinfo.StartCompressedOffset(id)),
			End:   int64(ix.zinfo.EndCompressedOffset(id, ix.zt.CompressedArchiveSize)),
		})
	}
	return out
}
