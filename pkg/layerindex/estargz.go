package layerindex

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/opencontainers/go-digest"
)

// FormatEStargz is the index of an eStargz or zstd:chunked layer: the
// layer's own table of contents, copied out of the blob so that a mount
// reads it without touching the layer, gzip-compressed JSON (tocIndex).
// Each file's chunks are compressed on their own in such a layer, so a
// read fetches and decompresses just the chunks it needs, each checked
// against the chunk digest the TOC gives.
const FormatEStargz = "estargz-toc+gzip"

// tocIndex is the serialised form of FormatEStargz.
type tocIndex struct {
	// Compression is "gzip" (eStargz) or "zstd" (zstd:chunked).
	Compression string `json:"compression"`
	// TOCOffset is where the TOC starts in the blob: the end of the
	// last chunk.
	TOCOffset int64 `json:"tocOffset"`
	// TOCDigest is the digest the layer's producer gave its TOC (the
	// containerd.io/snapshot/stargz/toc.digest annotation).
	TOCDigest digest.Digest `json:"tocDigest"`
	TOC       *estargz.JTOC `json:"toc"`
}

// maxChunkRegion bounds the compressed bytes of one chunk region, and
// what it inflates to: eStargz writes 4 MiB chunks by default.
const maxChunkRegion = 64 << 20

// tocDecompressor is a decompressor of layers with a TOC that gives the
// TOC's JSON as it is, for parseTOC to bound.
type tocDecompressor interface {
	estargz.Decompressor
	DecompressTOC(r io.Reader) (io.ReadCloser, error)
}

// decompressors of the layers with a TOC, by compression.
var tocDecompressors = map[string][]tocDecompressor{
	"gzip": {new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor)},
	"zstd": {new(zstdchunked.Decompressor)},
}

// buildFromTOC returns the FormatEStargz index of the layer of size bytes
// read from f if it is an eStargz (gzip) or zstd:chunked (zstd) layer
// whose TOC has a digest for every chunk; errNoTOC if it is not one.
func buildFromTOC(f io.ReaderAt, size int64, algo string) ([]byte, error) {
	for _, d := range tocDecompressors[algo] {
		if size < d.FooterSize() {
			continue
		}
		footer := make([]byte, d.FooterSize())
		if _, err := f.ReadAt(footer, size-d.FooterSize()); err != nil {
			return nil, err
		}
		_, tocOffset, tocSize, err := d.ParseFooter(footer)
		if err != nil || tocOffset < 0 || tocOffset >= size {
			continue
		}
		if tocSize <= 0 {
			tocSize = size - tocOffset - d.FooterSize()
		}
		toc, tocDigest, err := parseTOC(d, io.NewSectionReader(f, tocOffset, tocSize))
		if err != nil {
			continue
		}
		ix := tocIndex{Compression: algo, TOCOffset: tocOffset, TOCDigest: tocDigest, TOC: toc}
		data, err := json.Marshal(ix)
		if err != nil {
			return nil, err
		}
		out, err := gzipIndex(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		// The index must open: every chunk with a digest, sane offsets.
		if _, err := parseTOCIndex(out, size); err != nil {
			return nil, fmt.Errorf("%w: %v", errNoTOC, err)
		}
		return out, nil
	}
	return nil, errNoTOC
}

var errNoTOC = errors.New("not an eStargz or zstd:chunked layer")

// parseTOC reads a layer's TOC as d's own ParseTOC does, but no more than
// MaxIndexSize bytes of it inflated: the TOC is parsed whole in memory,
// and a few compressed bytes of it can inflate a thousandfold. A TOC
// past the bound is no TOC (an index could not hold it anyway), and the
// layer is indexed as any other.
func parseTOC(d tocDecompressor, r io.Reader) (*estargz.JTOC, digest.Digest, error) {
	rc, err := d.DecompressTOC(r)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	dg := digest.Canonical.Digester()
	toc := new(estargz.JTOC)
	bounded := &inflateBound{r: rc, left: MaxIndexSize, max: MaxIndexSize}
	if err := json.NewDecoder(io.TeeReader(bounded, dg.Hash())).Decode(toc); err != nil {
		return nil, "", fmt.Errorf("layer TOC: %w", err)
	}
	return toc, dg.Digest(), nil
}

// tocReader reads a layer's files through its own TOC.
type tocReader struct {
	compression string
	entries     []Entry
	files       map[string][]tocChunk // by entry name: the file's chunks, in order
	regions     []tocRegion           // sorted by start
	spans       *spanCache
	stats       *Stats

	mu      sync.Mutex
	checked map[int]bool // regions whose chunks matched their digests
}

// tocChunk is a piece of a file: its bytes [Off, Off+Size) are bytes
// [Inner, Inner+Size) of region Region (which starts at start of the
// blob), uncompressed.
type tocChunk struct {
	Off, Size, Inner int64
	start            int64
	Region           int
	Digest           digest.Digest
}

// tocRegion is a run of the blob compressed on its own: one or more
// chunks (several in zstd:chunked), [start, end) of the blob.
type tocRegion struct {
	start, end int64
	need       int64 // uncompressed bytes that hold every chunk in it
	chunks     []tocChunk
}

func (r *tocReader) Entries() []Entry   { return r.entries }
func (r *tocReader) CountInto(s *Stats) { r.stats = s }
func (r *tocReader) Close()             {}

// parseTOCIndex reads a FormatEStargz index and checks that it fits a
// layer of layerSize bytes.
func parseTOCIndex(data []byte, layerSize int64) (*tocReader, error) {
	raw, err := inflateIndex(data)
	if err != nil {
		return nil, fmt.Errorf("layer TOC: %w", err)
	}
	var ix tocIndex
	if err := json.Unmarshal(raw, &ix); err != nil {
		return nil, fmt.Errorf("layer TOC: %w", err)
	}
	if _, ok := tocDecompressors[ix.Compression]; !ok {
		return nil, fmt.Errorf("layer TOC: compression %q", ix.Compression)
	}
	if ix.TOC == nil || ix.TOCOffset <= 0 || ix.TOCOffset > layerSize {
		return nil, fmt.Errorf("layer TOC: no TOC, or it starts at %d of a %d-byte layer", ix.TOCOffset, layerSize)
	}
	r := &tocReader{compression: ix.Compression, files: map[string][]tocChunk{}, spans: newSpanCache(DefaultInlineSpanSize), stats: &Stats{}, checked: map[int]bool{}}

	// Entries in tar order; "chunk" entries continue the last file.
	regionAt := map[int64]int{}
	var last string // the file that "chunk" entries continue
	var lastSize int64
	for _, te := range ix.TOC.Entries {
		if te == nil {
			return nil, errors.New("layer TOC: a null entry")
		}
		if te.Type == "chunk" {
			if last == "" || (te.Name != "" && cleanName(te.Name) != last) {
				return nil, fmt.Errorf("layer TOC: a chunk of %q follows no file", te.Name)
			}
			if err := r.addChunk(last, lastSize, te, regionAt); err != nil {
				return nil, err
			}
			continue
		}
		e, err := entryOfTOC(te)
		if err != nil {
			return nil, err
		}
		if e.Name == "" || e.Name == estargz.TOCTarName || e.Name == estargz.PrefetchLandmark || e.Name == estargz.NoPrefetchLandmark {
			last = ""
			continue // the root, and eStargz's own files
		}
		r.entries = append(r.entries, e)
		last = ""
		if e.IsReg() {
			if _, dup := r.files[e.Name]; dup {
				return nil, fmt.Errorf("layer TOC: %s listed twice", e.Name)
			}
			r.files[e.Name] = nil
			last, lastSize = e.Name, e.Size
			if e.Size > 0 {
				if err := r.addChunk(last, lastSize, te, regionAt); err != nil {
					return nil, err
				}
			}
		}
	}

	// Regions end where the next one starts; the last where the TOC does.
	slices.SortFunc(r.regions, func(a, b tocRegion) int { return cmp.Compare(a.start, b.start) })
	renumber := make(map[int64]int, len(r.regions))
	for i := range r.regions {
		end := ix.TOCOffset
		if i+1 < len(r.regions) {
			end = r.regions[i+1].start
		}
		g := &r.regions[i]
		g.end = end
		if g.end <= g.start {
			return nil, fmt.Errorf("layer TOC: chunks at %d, past the TOC at %d", g.start, ix.TOCOffset)
		}
		if g.end-g.start > maxChunkRegion || g.need > maxChunkRegion {
			return nil, fmt.Errorf("layer TOC: chunk region at %d is over %d bytes", g.start, maxChunkRegion)
		}
		renumber[g.start] = i
	}
	// Point each chunk at its region, and check that a file's chunks
	// cover it exactly.
	for i := range r.entries {
		e := &r.entries[i]
		if !e.IsReg() {
			continue
		}
		cs := r.files[e.Name]
		var at int64
		for j := range cs {
			cs[j].Region = renumber[cs[j].start]
			if cs[j].Off != at {
				return nil, fmt.Errorf("layer TOC: %s: chunk at %d, want %d", e.Name, cs[j].Off, at)
			}
			at += cs[j].Size
		}
		if at != e.Size {
			return nil, fmt.Errorf("layer TOC: %s: chunks hold %d bytes of %d", e.Name, at, e.Size)
		}
	}
	return r, nil
}

// addChunk adds the piece of file name, of fileSize bytes, that te
// describes.
func (r *tocReader) addChunk(name string, fileSize int64, te *estargz.TOCEntry, regionAt map[int64]int) error {
	if te.Offset <= 0 || te.InnerOffset < 0 || te.ChunkOffset < 0 || te.ChunkSize < 0 {
		return fmt.Errorf("layer TOC: %s: bad chunk (offset %d, inner %d, chunk %d+%d)", name, te.Offset, te.InnerOffset, te.ChunkOffset, te.ChunkSize)
	}
	size := te.ChunkSize
	if size == 0 { // to the end of the file
		size = fileSize - te.ChunkOffset
		if size <= 0 {
			return fmt.Errorf("layer TOC: %s: chunk at %d past the end", name, te.ChunkOffset)
		}
	}
	d := te.ChunkDigest
	if d == "" && te.Type == "reg" && te.ChunkOffset == 0 && size == fileSize {
		d = te.Digest // a file in one chunk: the file's digest is the chunk's
	}
	dg, err := digest.Parse(d)
	if err != nil {
		return fmt.Errorf("layer TOC: %s: chunk at %d has no usable digest (%q): %v", name, te.ChunkOffset, d, err)
	}
	if te.InnerOffset > maxChunkRegion || size > maxChunkRegion {
		return fmt.Errorf("layer TOC: %s: chunk at %d is over %d bytes", name, te.ChunkOffset, maxChunkRegion)
	}
	i, ok := regionAt[te.Offset]
	if !ok {
		i = len(r.regions)
		regionAt[te.Offset] = i
		r.regions = append(r.regions, tocRegion{start: te.Offset})
	}
	c := tocChunk{Off: te.ChunkOffset, Size: size, Inner: te.InnerOffset, start: te.Offset, Digest: dg}
	g := &r.regions[i]
	g.chunks = append(g.chunks, c)
	g.need = max(g.need, te.InnerOffset+size)
	r.files[name] = append(r.files[name], c)
	return nil
}

// cleanName is an entry's name as Entry holds it: relative, clean.
func cleanName(name string) string {
	name = strings.TrimLeft(path.Clean("/"+name), "/")
	return name
}

var tocTypes = map[string]byte{
	"reg": '0', "hardlink": '1', "symlink": '2', "char": '3', "block": '4', "dir": '5', "fifo": '6',
}

func entryOfTOC(te *estargz.TOCEntry) (Entry, error) {
	t, ok := tocTypes[te.Type]
	if !ok {
		return Entry{}, fmt.Errorf("layer TOC: %s: unknown type %q", te.Name, te.Type)
	}
	if te.Size < 0 {
		return Entry{}, fmt.Errorf("layer TOC: %s: size %d", te.Name, te.Size)
	}
	e := Entry{
		Name: cleanName(te.Name), Type: t, Mode: te.Mode, UID: te.UID, GID: te.GID,
		Devmajor: int64(te.DevMajor), Devminor: int64(te.DevMinor),
	}
	if te.ModTime3339 != "" {
		mt, err := time.Parse(time.RFC3339, te.ModTime3339)
		if err != nil {
			return Entry{}, fmt.Errorf("layer TOC: %s: modtime %q: %v", te.Name, te.ModTime3339, err)
		}
		e.ModTime = mt
	}
	switch t {
	case '0':
		e.Size = te.Size
	case '1':
		e.Linkname = cleanName(te.LinkName)
	case '2':
		e.Linkname = te.LinkName
	}
	if len(te.Xattrs) > 0 {
		e.Xattrs = make(map[string]string, len(te.Xattrs))
		for k, v := range te.Xattrs {
			e.Xattrs[k] = string(v)
		}
	}
	return e, nil
}

// ReadAt reads file e's bytes at off, fetching and decompressing only the
// chunks they are in, each checked against its digest before use.
func (r *tocReader) ReadAt(ctx context.Context, src Source, e *Entry, p []byte, off int64) (int, error) {
	if off >= e.Size {
		return 0, io.EOF
	}
	cs := r.files[e.Name]
	n := min(int64(len(p)), e.Size-off)
	done := int64(0)
	for done < n {
		if err := ctx.Err(); err != nil {
			return int(done), err
		}
		pos := off + done
		j, _ := slices.BinarySearchFunc(cs, pos, func(c tocChunk, x int64) int {
			switch {
			case c.Off+c.Size <= x:
				return -1
			case c.Off > x:
				return 1
			}
			return 0
		})
		if j >= len(cs) {
			return int(done), fmt.Errorf("layer TOC: %s has no chunk at %d", e.Name, pos)
		}
		c := cs[j]
		data, err := r.region(src.Layer, c.Region)
		if err != nil {
			return int(done), err
		}
		k := copy(p[done:n], data[c.Inner+pos-c.Off:c.Inner+c.Size])
		done += int64(k)
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

// region returns region i uncompressed, up to its last chunk's end.
func (r *tocReader) region(blob io.ReaderAt, i int) ([]byte, error) {
	return r.spans.get(i, r.stats, func() ([]byte, error) { return r.load(blob, i) })
}

func (r *tocReader) load(blob io.ReaderAt, i int) ([]byte, error) {
	start := time.Now()
	g := r.regions[i]
	buf := make([]byte, g.end-g.start)
	if _, err := blob.ReadAt(buf, g.start); err != nil && !(errors.Is(err, io.EOF) && len(buf) > 0) {
		return nil, fmt.Errorf("read chunks at %d of the layer: %w", g.start, err)
	}
	dr, err := tocDecompressors[r.compression][0].Reader(bytes.NewReader(buf))
	if err != nil {
		return nil, fmt.Errorf("chunks at %d of the layer: %w", g.start, err)
	}
	data := make([]byte, g.need)
	_, err = io.ReadFull(dr, data)
	dr.Close()
	if err != nil {
		return nil, fmt.Errorf("chunks at %d of the layer: %w", g.start, err)
	}
	r.mu.Lock()
	checked := r.checked[i]
	r.mu.Unlock()
	if !checked {
		for _, c := range g.chunks {
			if digest.FromBytes(data[c.Inner:c.Inner+c.Size]) != c.Digest {
				return nil, fmt.Errorf("layer TOC: the chunk at %d of the layer does not match the TOC (%s): refusing the index", g.start, c.Digest)
			}
		}
		r.mu.Lock()
		r.checked[i] = true
		r.mu.Unlock()
	}
	r.stats.loaded(len(buf), time.Since(start))
	return data, nil
}

func (r *tocReader) Cached(id int) bool { return r.spans.contains(id) }

func (r *tocReader) Load(src Source, id int) error {
	if id < 0 || id >= len(r.regions) {
		return nil
	}
	_, err := r.region(src.Layer, id)
	return err
}

func (r *tocReader) Spans(e *Entry, off, n int64) []Span {
	if off >= e.Size || n <= 0 {
		return nil
	}
	end := min(off+n, e.Size)
	var out []Span
	for _, c := range r.files[e.Name] {
		if c.Off+c.Size <= off || c.Off >= end {
			continue
		}
		if len(out) > 0 && out[len(out)-1].ID == c.Region {
			continue
		}
		g := r.regions[c.Region]
		out = append(out, Span{ID: c.Region, Start: g.start, End: g.end})
	}
	return out
}
