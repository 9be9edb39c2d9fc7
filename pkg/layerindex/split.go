package layerindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	kflate "github.com/klauspost/compress/flate"
	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// A split zTOC (FormatZTOCSplit) is a zTOC whose checkpoints say only
// where each span starts; the inflate windows, 32 KiB each and most of a
// gzip zTOC, are compressed one by one into a blob of their own, one block
// per window (AnnotationWindows). A mount then fetches the small index
// whole and the window of each span it reads, so spans can be small
// without the index growing with them (docs/lazy.md).
//
// The checkpoint table takes the place of soci's checkpoint blob in the
// zTOC's CompressionInfo:
//
//	count  uint32, little-endian
//	count times:
//	  in     uint64  compressed offset of the checkpoint (as soci's)
//	  out    uint64  uncompressed offset where the span starts
//	  bits   uint8   bits of the byte before in that belong to the span
//	  wlen   uint32  length of the span's compressed window
//	  wsum   [32]byte sha256 of the compressed window
//
// The windows blob is the compressed windows in span order; each is raw
// deflate of the 32 KiB before out.

// windowSize is deflate's window, the history a checkpoint keeps.
const windowSize = 32 << 10

const (
	tableHeader = 4
	tableRecord = 8 + 8 + 1 + 4 + sha256.Size
	// soci's gzip checkpoint blob: count uint32, span size uint64, then
	// in, out, bits and the window for each checkpoint.
	sociHeader = 4 + 8
	sociRecord = 8 + 8 + 1 + windowSize
	// maxWindow bounds a compressed window: deflate never grows 32 KiB
	// by more than a few bytes per stored block.
	maxWindow = windowSize + 1024
)

// checkpoint is where a span starts, and where its window is.
type checkpoint struct {
	in, out int64
	bits    uint8
	wlen    int
	woff    int64 // offset of the window in the windows blob
	wsum    [sha256.Size]byte
}

// splitTable is a split zTOC's checkpoints: it maps offsets to spans as
// soci's zinfo does, and inflates a span with its window fetched apart.
type splitTable struct {
	points             []checkpoint
	compressed, uncomp int64 // sizes of the blob and of the tar stream
}

// Windows are a split zTOC's compressed windows, kept in a temporary file
// from when they are made until they are added as a blob: about a
// sixteenth of a layer's tar, and all of it for incompressible bytes, too
// much to hold in memory for a layer of gigabytes. Close removes them.
type Windows struct {
	f     *os.File
	mu    sync.Mutex // guards end, for windows written as they are made
	end   int64
	order []windowAt // the windows in span order
}

// windowAt is where a window is in the file.
type windowAt struct {
	off int64
	n   int
}

func newWindows() (*Windows, error) {
	f, err := os.CreateTemp("", "shoal-windows-")
	if err != nil {
		return nil, err
	}
	return &Windows{f: f}, nil
}

// put writes window w at the file's end.
func (ws *Windows) put(w []byte) (windowAt, error) {
	ws.mu.Lock()
	at := windowAt{off: ws.end, n: len(w)}
	ws.end += int64(len(w))
	ws.mu.Unlock()
	_, err := ws.f.WriteAt(w, at.off)
	return at, err
}

// Len is how many windows there are.
func (ws *Windows) Len() int { return len(ws.order) }

// Chunks reads the windows one at a time, in span order.
func (ws *Windows) Chunks() blob.Chunks { return &windowChunks{ws: ws} }

// Close removes the windows' file. A nil Windows has nothing to remove.
func (ws *Windows) Close() error {
	if ws == nil {
		return nil
	}
	ws.f.Close()
	return os.Remove(ws.f.Name())
}

type windowChunks struct {
	ws   *Windows
	next int
}

func (c *windowChunks) Next() ([]byte, error) {
	if c.next == len(c.ws.order) {
		return nil, io.EOF
	}
	at := c.ws.order[c.next]
	w := make([]byte, at.n)
	if _, err := c.ws.f.ReadAt(w, at.off); err != nil {
		return nil, fmt.Errorf("window %d: %w", c.next, err)
	}
	c.next++
	return w, nil
}

// windowWriters keeps deflate writers for windows: a new one allocates
// and clears more than compressing a window costs.
var windowWriters = sync.Pool{New: func() any {
	zw, _ := kflate.NewWriter(io.Discard, kflate.DefaultCompression)
	return zw
}}

// deflateWindow compresses a window as a split zTOC stores it.
func deflateWindow(w []byte) ([]byte, error) {
	out := bytes.NewBuffer(make([]byte, 0, len(w)/2))
	zw := windowWriters.Get().(*kflate.Writer)
	defer windowWriters.Put(zw)
	zw.Reset(out)
	if _, err := zw.Write(w); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// parseSplitTable reads a checkpoint table for spans spans of a blob of
// compressed bytes holding uncomp bytes of tar, and checks that every
// offset in it is possible.
func parseSplitTable(table []byte, spans int, compressed, uncomp int64) (*splitTable, error) {
	if len(table) < tableHeader {
		return nil, fmt.Errorf("checkpoint table of %d bytes", len(table))
	}
	n := int(binary.LittleEndian.Uint32(table))
	if n != spans || n < 1 || len(table) != tableHeader+n*tableRecord {
		return nil, fmt.Errorf("checkpoint table of %d bytes for %d checkpoints, %d spans", len(table), n, spans)
	}
	t := &splitTable{points: make([]checkpoint, n), compressed: compressed, uncomp: uncomp}
	var woff int64
	for i := range t.points {
		rec := table[tableHeader+i*tableRecord:]
		p := checkpoint{
			in:   int64(binary.LittleEndian.Uint64(rec)),
			out:  int64(binary.LittleEndian.Uint64(rec[8:])),
			bits: rec[16],
			wlen: int(binary.LittleEndian.Uint32(rec[17:])),
			woff: woff,
		}
		copy(p.wsum[:], rec[21:])
		switch {
		case p.bits > 7, p.wlen < 1, p.wlen > maxWindow:
			return nil, fmt.Errorf("checkpoint %d: %d bits, %d-byte window", i, p.bits, p.wlen)
		case p.in < 1 || p.in > compressed || p.out < 0 || p.out > uncomp:
			return nil, fmt.Errorf("checkpoint %d at %d/%d is outside the layer (%d/%d bytes)", i, p.in, p.out, compressed, uncomp)
		case i == 0 && p.out != 0:
			return nil, fmt.Errorf("the first checkpoint starts at %d, not 0", p.out)
		case i > 0 && (p.out <= t.points[i-1].out || p.in <= t.points[i-1].in):
			return nil, fmt.Errorf("checkpoint %d goes back", i)
		}
		woff += int64(p.wlen)
		t.points[i] = p
	}
	return t, nil
}

func (t *splitTable) MaxSpanID() compression.SpanID { return compression.SpanID(len(t.points) - 1) }

func (t *splitTable) UncompressedOffsetToSpanID(off compression.Offset) compression.SpanID {
	i := sort.Search(len(t.points), func(i int) bool { return t.points[i].out > int64(off) })
	return compression.SpanID(max(i-1, 0))
}

func (t *splitTable) StartCompressedOffset(id compression.SpanID) compression.Offset {
	p := t.points[id]
	if p.bits != 0 {
		return compression.Offset(p.in - 1)
	}
	return compression.Offset(p.in)
}

func (t *splitTable) EndCompressedOffset(id compression.SpanID, size compression.Offset) compression.Offset {
	if id == t.MaxSpanID() {
		return size
	}
	return compression.Offset(t.points[id+1].in)
}

func (t *splitTable) StartUncompressedOffset(id compression.SpanID) compression.Offset {
	return compression.Offset(t.points[id].out)
}

func (t *splitTable) EndUncompressedOffset(id compression.SpanID, size compression.Offset) compression.Offset {
	if id == t.MaxSpanID() {
		return size
	}
	return compression.Offset(t.points[id+1].out)
}

func (t *splitTable) Close() {}

// window reads span id's window from the windows blob and checks it.
func (t *splitTable) window(windows io.ReaderAt, id compression.SpanID) ([]byte, error) {
	if windows == nil {
		return nil, fmt.Errorf("no windows blob for a split index")
	}
	p := t.points[id]
	buf := make([]byte, p.wlen)
	if _, err := windows.ReadAt(buf, p.woff); err != nil && !(err == io.EOF && len(buf) > 0) {
		return nil, fmt.Errorf("read window %d: %w", id, err)
	}
	if sha256.Sum256(buf) != p.wsum {
		return nil, fmt.Errorf("window %d does not match the index: refusing the index", id)
	}
	w, err := io.ReadAll(io.LimitReader(kflate.NewReader(bytes.NewReader(buf)), windowSize+1))
	if err != nil || len(w) != windowSize {
		return nil, fmt.Errorf("window %d: %d bytes inflated (%v), want %d", id, len(w), err, windowSize)
	}
	return w, nil
}

// inflate inflates span id's compressed bytes buf, of size bytes, with its
// window: through soci's inflater, given a checkpoint blob of this one
// checkpoint.
func (t *splitTable) inflate(buf, window []byte, id compression.SpanID, size compression.Offset) ([]byte, error) {
	p := t.points[id]
	blob := make([]byte, 0, sociHeader+sociRecord)
	blob = binary.LittleEndian.AppendUint32(blob, 1)
	blob = binary.LittleEndian.AppendUint64(blob, uint64(windowSize)) // span size: unused
	blob = binary.LittleEndian.AppendUint64(blob, uint64(p.in))
	blob = binary.LittleEndian.AppendUint64(blob, uint64(p.out))
	blob = append(blob, p.bits)
	blob = append(blob, window...)
	zi, err := compression.NewZinfo(compression.Gzip, blob)
	if err != nil {
		return nil, err
	}
	defer zi.Close()
	return zi.ExtractDataFromBuffer(buf, size, compression.Offset(p.out), 0)
}
