package layerindex

import (
	"archive/tar"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/awslabs/soci-snapshotter/ztoc/compression"
	zinfofb "github.com/awslabs/soci-snapshotter/ztoc/compression/fbs/zinfo"
	"github.com/containerd/stargz-snapshotter/estargz"
	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"golang.org/x/sync/errgroup"
)

// A zTOC is built in one pass over the layer's compressed bytes, which
// may still be arriving (a push indexes a layer as it adds it). zlib
// inflates the layer a block at a time, so that a checkpoint (the
// inflate state at a block boundary: where it is and the 32 KiB window
// before it) can be taken every span of output; the output goes to the
// tar listing on another goroutine, and the checkpoints' windows are
// compressed and the spans' compressed bytes hashed by workers, so that
// the inflate, the one step that cannot be split, runs alone on its core.
//
// Checkpoints are where soci's zinfo puts them (the first block boundary
// more than span bytes of output past the last), so an index is the same
// bytes, and an image the same root CID, whichever shoal built it.

const (
	readChunk   = 512 << 10 // compressed bytes read at a time
	outChunk    = 2 << 20   // inflated bytes handed to the tar listing at a time
	outBuffers  = 4         // output chunks in flight
	digestBatch = 16        // spans hashed together (sha256x's lanes)
)

// ztocPass builds the zTOC of one layer.
type ztocPass struct {
	algo   string
	span   int64
	split  bool
	maxTar int64
	size   int64 // the layer's compressed size
	// inflated is how many bytes the layer inflated to, the tar and
	// whatever follows its end
	inflated int64

	work  errgroup.Group // window compression and span hashing
	spare chan []byte    // span buffers hashed and free again
	// windows holds a split zTOC's compressed windows as they are made
	windows *Windows
	points  []*point
	// spans whose compressed bytes wait to be hashed together
	pending    [][]byte
	pendingFor []*point
}

// point is a checkpoint and what the workers make of it: its window,
// compressed if the zTOC is split, and the digest of the compressed
// bytes of the span it starts.
type point struct {
	in, out int64
	bits    uint8
	window  []byte // raw; in a split zTOC, nil once compressed and kept
	wat     windowAt
	wsum    [sha256.Size]byte
	digest  digest.Digest
}

// buildZTOCFrom builds a zTOC of a layer of size compressed bytes read
// from r, its windows apart if split, whose tar stream is at most maxTar
// bytes, and says whether the tar holds an eStargz TOC.
func buildZTOCFrom(r io.Reader, size int64, algo string, span int64, split bool, maxTar int64) (*Built, bool, error) {
	p := &ztocPass{algo: algo, span: span, split: split, maxTar: maxTar, size: size, spare: make(chan []byte, 2*digestBatch)}
	p.work.SetLimit(runtime.GOMAXPROCS(0))
	if split {
		var err error
		if p.windows, err = newWindows(); err != nil {
			return nil, false, fmt.Errorf("index layer: %w", err)
		}
	}
	built, hasTOC, err := p.run(r)
	if err != nil {
		p.windows.Close()
	}
	return built, hasTOC, err
}

// run makes the pass.
func (p *ztocPass) run(r io.Reader) (*Built, bool, error) {
	algo, size, span, split := p.algo, p.size, p.span, p.split
	list := newTarLister()
	var err error
	if algo == compression.Gzip {
		err = p.inflate(r, list)
	} else {
		err = p.plain(r, list)
	}
	list.finish()
	workErr := p.work.Wait()
	toc, tarSize, listErr := list.result()
	if errors.Is(err, ErrInflatesPastBound) {
		return nil, false, fmt.Errorf("index layer of %d bytes: its tar stream: %w (a gzip bomb, or mostly empty space)", size, err)
	}
	// A failed inflate fails the listing too: its error is the one to tell.
	if err := cmp.Or(err, listErr, workErr); err != nil {
		return nil, false, fmt.Errorf("index layer: %w", err)
	}
	if n := len(p.points); n > 0 && p.points[n-1].out >= int64(tarSize) {
		// A checkpoint past the tar's end (a layer that goes on after
		// it: padding, a second tar) needs a last span that ends where
		// the layer does, not the tar, for the index to hold together.
		tarSize = compression.Offset(p.inflated)
	}
	hasTOC := slices.ContainsFunc(toc.FileMetadata, func(m ztoc.FileMetadata) bool { return m.Name == estargz.TOCTarName })
	built := &Built{Format: FormatZTOC}
	info := ztoc.CompressionInfo{MaxSpanID: compression.SpanID(len(p.points) - 1), CompressionAlgorithm: algo}
	for _, pt := range p.points {
		info.SpanDigests = append(info.SpanDigests, pt.digest)
	}
	switch {
	case algo != compression.Gzip:
		info.Checkpoints = tarZinfo(span, size)
	case split:
		info.Checkpoints = p.splitTable()
		built.Windows = p.windows
		built.Format = FormatZTOCSplit
	default:
		info.Checkpoints = p.checkpointBlob()
	}
	data, _, err := ztoc.Marshal(&ztoc.Ztoc{
		Version:                 ztoc.Version09,
		TOC:                     toc,
		CompressionInfo:         info,
		CompressedArchiveSize:   compression.Offset(size),
		UncompressedArchiveSize: tarSize,
		BuildToolIdentifier:     "shoal",
	})
	if err != nil {
		return nil, false, fmt.Errorf("index layer: %w", err)
	}
	if built.Index, err = gzipIndex(data); err != nil {
		return nil, false, err
	}
	return built, hasTOC, nil
}

// inflate reads a gzip layer from r, hands its tar stream to list and
// takes a checkpoint every span.
func (p *ztocPass) inflate(r io.Reader, list *tarLister) error {
	z, err := newZstream()
	if err != nil {
		return err
	}
	defer z.close()
	// comp holds the compressed bytes from where the current span starts
	// (compStart) to what has been read; in is what zlib has yet to take.
	var comp, in []byte
	var compStart, totIn, totOut, last int64
	eof := false
	readMore := func() error { // in stays empty at the end
		if eof {
			return nil
		}
		if cap(comp)-len(comp) < readChunk {
			comp = append(p.spanBuffer(2*cap(comp)+readChunk), comp...)
		}
		n, err := io.ReadFull(r, comp[len(comp):len(comp)+readChunk])
		in = comp[len(comp) : len(comp)+n]
		comp = comp[:len(comp)+n]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			eof, err = true, nil
		}
		return err
	}
	out := list.buffer()
	pos := windowSize // out[:windowSize] is the window: zeros at first
	for {
		if len(in) == 0 {
			if err := readMore(); err != nil {
				return err
			}
			if len(in) == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		if pos == len(out) {
			out = list.send(out, pos)
			pos = windowSize
			if list.failed() != nil {
				return nil // the listing's error says why
			}
		}
		st, err := z.step(in, out[pos:], totOut, last, p.span)
		if err != nil {
			return err
		}
		in = in[st.in:]
		totIn += int64(st.in)
		pos += st.out
		totOut += int64(st.out)
		if totOut > p.maxTar {
			return fmt.Errorf("%w: over %d bytes inflated", ErrInflatesPastBound, p.maxTar)
		}
		if st.end {
			// Another gzip member may follow (pigz and others write
			// several); anything else after the stream is an error.
			if len(in) == 0 {
				if err := readMore(); err != nil {
					return err
				}
				if len(in) == 0 {
					break
				}
			}
			if err := z.reset(); err != nil {
				return err
			}
			continue
		}
		if st.checkpoint {
			start := totIn
			if st.bits != 0 {
				start-- // the span starts in the byte it shares with the last
			}
			if len(p.points) > 0 {
				p.spanDone(comp[:totIn-compStart])
			}
			rest := comp[start-compStart:]
			comp = append(p.spanBuffer(cap(comp)), rest...)
			in = comp[len(rest)-len(in):]
			compStart = start
			p.checkpoint(totIn, totOut, st.bits, out[pos-windowSize:pos])
			last = totOut
		}
	}
	list.send(out, pos)
	p.inflated = totOut
	if len(p.points) > 0 {
		p.spanDone(comp)
	}
	p.flushDigests()
	return nil
}

// plain reads an uncompressed tar layer from r, whose spans are every
// span bytes.
func (p *ztocPass) plain(r io.Reader, list *tarLister) error {
	out := list.buffer()
	pos := windowSize
	var total int64
	var span []byte
	for {
		if pos == len(out) {
			out = list.send(out, pos)
			pos = windowSize
		}
		n, err := r.Read(out[pos:])
		for data := out[pos : pos+n]; len(data) > 0; {
			if len(span) == 0 {
				p.points = append(p.points, &point{in: total, out: total})
			}
			k := min(int64(len(data)), p.span-int64(len(span)))
			span = append(span, data[:k]...)
			data, total = data[k:], total+k
			if int64(len(span)) == p.span {
				p.spanDone(span)
				span = nil
			}
		}
		pos += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	list.send(out, pos)
	p.inflated = total
	if len(span) > 0 {
		p.spanDone(span)
	}
	p.flushDigests()
	if total != p.size {
		return fmt.Errorf("layer of %d bytes read as %d", p.size, total)
	}
	return nil
}

// checkpoint records a checkpoint and has its window compressed.
func (p *ztocPass) checkpoint(in, out int64, bits uint8, window []byte) {
	pt := &point{in: in, out: out, bits: bits, window: append([]byte(nil), window...)}
	p.points = append(p.points, pt)
	if p.split {
		p.work.Go(func() error {
			w, err := deflateWindow(pt.window)
			if err != nil {
				return err
			}
			pt.wsum = sha256.Sum256(w)
			pt.wat, err = p.windows.put(w)
			pt.window = nil
			return err
		})
	}
}

// spanDone takes the compressed bytes of the latest checkpoint's span,
// to be hashed with the next spans.
func (p *ztocPass) spanDone(b []byte) {
	p.pending = append(p.pending, b)
	p.pendingFor = append(p.pendingFor, p.points[len(p.points)-1])
	if len(p.pending) == digestBatch {
		p.flushDigests()
	}
}

func (p *ztocPass) flushDigests() {
	if len(p.pending) == 0 {
		return
	}
	spans, points := p.pending, p.pendingFor
	p.pending, p.pendingFor = nil, nil
	p.work.Go(func() error {
		sums := make([][sha256.Size]byte, len(spans))
		sha256x.SumMany(spans, sums)
		for i, pt := range points {
			pt.digest = digest.NewDigestFromBytes(digest.SHA256, sums[i][:])
		}
		for _, b := range spans {
			select {
			case p.spare <- b[:0]:
			default:
			}
		}
		return nil
	})
}

// spanBuffer returns an empty buffer of at least n bytes' capacity for a
// span's compressed bytes, one hashed already if there is one: a new one
// is cleared, which costs as much as hashing it.
func (p *ztocPass) spanBuffer(n int) []byte {
	select {
	case b := <-p.spare:
		if cap(b) >= n {
			return b
		}
	default:
	}
	return make([]byte, 0, n)
}

// splitTable is the checkpoint table of a split zTOC (split.go); it puts
// the windows in span order.
func (p *ztocPass) splitTable() []byte {
	table := make([]byte, tableHeader, tableHeader+len(p.points)*tableRecord)
	binary.LittleEndian.PutUint32(table, uint32(len(p.points)))
	for _, pt := range p.points {
		table = binary.LittleEndian.AppendUint64(table, uint64(pt.in))
		table = binary.LittleEndian.AppendUint64(table, uint64(pt.out))
		table = append(table, pt.bits)
		table = binary.LittleEndian.AppendUint32(table, uint32(pt.wat.n))
		table = append(table, pt.wsum[:]...)
		p.windows.order = append(p.windows.order, pt.wat)
	}
	return table
}

// checkpointBlob is soci's gzip checkpoint blob: the count, the span
// size, and each checkpoint with its window.
func (p *ztocPass) checkpointBlob() []byte {
	blob := make([]byte, 0, sociHeader+len(p.points)*sociRecord)
	blob = binary.LittleEndian.AppendUint32(blob, uint32(len(p.points)))
	blob = binary.LittleEndian.AppendUint64(blob, uint64(p.span))
	for _, pt := range p.points {
		blob = binary.LittleEndian.AppendUint64(blob, uint64(pt.in))
		blob = binary.LittleEndian.AppendUint64(blob, uint64(pt.out))
		blob = append(blob, pt.bits)
		blob = append(blob, pt.window...)
	}
	return blob
}

// tarZinfo is soci's zinfo of an uncompressed layer: its spans are every
// span bytes of the blob's size bytes.
func tarZinfo(span, size int64) []byte {
	b := flatbuffers.NewBuilder(0)
	zinfofb.TarZinfoStart(b)
	zinfofb.TarZinfoAddVersion(b, 2)
	zinfofb.TarZinfoAddSpanSize(b, span)
	zinfofb.TarZinfoAddSize(b, size)
	b.Finish(zinfofb.TarZinfoEnd(b))
	return b.FinishedBytes()
}

// tarLister lists a tar stream handed to it in chunks, on a goroutine of
// its own. The chunks are buffers of windowSize+outChunk bytes whose
// first windowSize bytes are the history before the chunk (the inflate
// window a checkpoint copies); they go round between the pass and the
// listing.
type tarLister struct {
	chunks chan []byte
	free   chan []byte
	done   chan struct{} // closed when the listing has ended
	toc    ztoc.TOC
	size   compression.Offset
	err    error
}

func newTarLister() *tarLister {
	l := &tarLister{chunks: make(chan []byte, outBuffers), free: make(chan []byte, outBuffers), done: make(chan struct{})}
	for range outBuffers - 1 {
		l.free <- make([]byte, windowSize+outChunk)
	}
	go l.run()
	return l
}

// buffer is the pass's first buffer.
func (l *tarLister) buffer() []byte { return make([]byte, windowSize+outChunk) }

// send hands out[windowSize:pos] to the listing and returns the buffer to
// go on in, its history the last windowSize bytes of out.
func (l *tarLister) send(out []byte, pos int) []byte {
	next := out
	select {
	case next = <-l.free:
	case <-l.done: // the listing is over: nothing more to hand it
	}
	copy(next[:windowSize], out[pos-windowSize:pos])
	if &next[0] != &out[0] {
		select {
		case l.chunks <- out[:pos]:
		case <-l.done:
		}
	}
	return next
}

// failed is the listing's error once it has ended with one.
func (l *tarLister) failed() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

// finish ends the stream; result waits for the listing.
func (l *tarLister) finish() { close(l.chunks) }

func (l *tarLister) result() (ztoc.TOC, compression.Offset, error) {
	<-l.done
	return l.toc, l.size, l.err
}

func (l *tarLister) run() {
	defer close(l.done)
	cr := &chunkReader{l: l}
	l.toc, l.size, l.err = listTar(cr)
	if l.err == nil {
		// What follows the tar's end still inflates: the pass goes on to
		// check it; the chunks it sends meanwhile are dropped.
		for c := range l.chunks {
			l.recycle(c)
		}
	}
}

// recycle gives a chunk's buffer back to the pass.
func (l *tarLister) recycle(c []byte) {
	select {
	case l.free <- c[:cap(c)]:
	default:
	}
}

// listTar lists the entries of the tar stream read from r, as soci's
// TOC builder does: each entry's header and data offsets, and the
// offset where the tar ends.
func listTar(r *chunkReader) (ztoc.TOC, compression.Offset, error) {
	tr := tar.NewReader(r)
	var md []ztoc.FileMetadata
	var headerAt compression.Offset
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return ztoc.TOC{}, 0, fmt.Errorf("tar header: %w", err)
		}
		typ, ok := entryTypes[hdr.Typeflag]
		if !ok {
			return ztoc.TOC{}, 0, fmt.Errorf("tar entry %s: unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		m := ztoc.FileMetadata{
			Name: hdr.Name, Type: typ,
			UncompressedOffset: compression.Offset(r.pos), UncompressedSize: compression.Offset(hdr.Size),
			TarHeaderOffset: headerAt, Linkname: hdr.Linkname, Mode: hdr.Mode,
			UID: hdr.Uid, GID: hdr.Gid, Uname: hdr.Uname, Gname: hdr.Gname,
			ModTime: hdr.ModTime, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor,
			PAXHeaders: hdr.PAXRecords,
		}
		md = append(md, m)
		headerAt = ztoc.AlignToTarBlock(m.UncompressedOffset + m.UncompressedSize)
	}
	return ztoc.TOC{FileMetadata: md}, compression.Offset(r.pos), nil
}

var entryTypes = map[byte]string{
	tar.TypeLink: "hardlink", tar.TypeSymlink: "symlink", tar.TypeDir: "dir", tar.TypeReg: "reg",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

// chunkReader reads the chunks handed to a tarLister, and skips forward
// without copying what tar seeks past (a file's data).
type chunkReader struct {
	l        *tarLister
	buf, cur []byte // the chunk's buffer, and what is left to read of it
	pos      int64
}

// next makes cur the next chunk; false at the stream's end.
func (c *chunkReader) next() bool {
	for len(c.cur) == 0 {
		if c.buf != nil {
			c.l.recycle(c.buf)
			c.buf = nil
		}
		chunk, ok := <-c.l.chunks
		if !ok {
			return false
		}
		c.buf, c.cur = chunk, chunk[windowSize:]
	}
	return true
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !c.next() {
		return 0, io.EOF
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	c.pos += int64(n)
	return n, nil
}

// Seek moves forward from the current position only, which is all
// archive/tar asks of it.
func (c *chunkReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off < 0 {
		return c.pos, errors.New("chunk reader: seeks forward only")
	}
	for off > 0 && c.next() {
		k := min(off, int64(len(c.cur)))
		c.cur = c.cur[k:]
		c.pos += k
		off -= k
	}
	return c.pos, nil
}
