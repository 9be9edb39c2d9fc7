// Package blob stores OCI blobs as UnixFS files and reads them back.
//
// A blob's CID depends only on its bytes and on the Layout used to chunk it,
// so the CIDs shoal computes equal those kubo computes for the same layout.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"

	chunk "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/batch"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
)

// Layout is the set of UnixFS importer parameters that decide a blob's DAG.
type Layout struct {
	Name      string
	ChunkSize int64
	MaxLinks  int
}

var (
	// Kubo is kubo's default layout with --cid-version=1: 256 KiB chunks,
	// 174 links per node. `nerdctl push ipfs://` on a default kubo node
	// produces it, so blobs dedup across the two tools.
	Kubo = Layout{Name: "kubo", ChunkSize: 256 << 10, MaxLinks: helpers.DefaultLinksPerBlock}
	// V1_2025 is kubo's unixfs-v1-2025 profile: 1 MiB chunks, 1024 links
	// per node, a quarter of the blocks to request, verify and announce.
	V1_2025 = Layout{Name: "unixfs-v1-2025", ChunkSize: 1 << 20, MaxLinks: 1024}
)

// Layouts lists the supported layouts by name.
var Layouts = map[string]Layout{Kubo.Name: Kubo, V1_2025.Name: V1_2025}

// ParseLayout returns the layout with the given name.
func ParseLayout(name string) (Layout, error) {
	l, ok := Layouts[name]
	if !ok {
		return Layout{}, fmt.Errorf("unknown UnixFS layout %q (want %q or %q)", name, Kubo.Name, V1_2025.Name)
	}
	return l, nil
}

// cidBuilder is CIDv1, sha2-256; raw leaves are set in the importer params.
var cidBuilder = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

// Add chunks r into a balanced UnixFS DAG with raw leaves, writes its blocks
// to dst and returns the root CID.
func Add(ctx context.Context, dst ipld.DAGService, r io.Reader, l Layout) (cid.Cid, error) {
	return AddHashing(ctx, dst, r, l, nil)
}

// AddHashing is Add that also feeds every byte of r, chunk by chunk, to
// whole (unless nil): the pass that hashes the leaves then gives the
// blob's own SHA-256 digest too, for the caller to check.
func AddHashing(ctx context.Context, dst ipld.DAGService, r io.Reader, l Layout, whole *sha256x.Stream) (cid.Cid, error) {
	if l.ChunkSize <= 0 || l.MaxLinks < 2 {
		return cid.Undef, fmt.Errorf("invalid UnixFS layout %+v", l)
	}
	split := newPresumSplitter(ctx, r, int(l.ChunkSize))
	split.whole = whole
	return layout(ctx, dst, split, l.MaxLinks, presumBuilder{prefix: cidBuilder, s: split})
}

// layout builds a balanced UnixFS DAG with raw leaves of the chunks split
// gives, writes its blocks to dst in batches and returns the root CID.
func layout(ctx context.Context, dst ipld.DAGService, split chunk.Splitter, maxLinks int, builder cid.Builder) (cid.Cid, error) {
	out := &orderedDAG{DAGService: dst, w: batch.NewBlocks(func(ns []ipld.Node) error { return dst.AddMany(ctx, ns) })}
	params := helpers.DagBuilderParams{Maxlinks: maxLinks, RawLeaves: true, CidBuilder: builder, Dagserv: out}
	db, err := params.New(split)
	if err != nil {
		return cid.Undef, err
	}
	root, err := balanced.Layout(db)
	if err != nil {
		_ = out.w.Wait()
		return cid.Undef, err
	}
	if err := out.w.Flush(); err != nil {
		return cid.Undef, err
	}
	return root.Cid(), nil
}

// orderedDAG sends the importer's writes to the DAG service in large
// AddMany calls, in the order the importer made the blocks: a pack
// (package packs) holds a file's leaves in file order only if they arrive
// in it.
type orderedDAG struct {
	ipld.DAGService
	w *batch.Writer[ipld.Node]
}

func (d *orderedDAG) Add(_ context.Context, n ipld.Node) error { return d.w.Add(n) }

func (d *orderedDAG) AddMany(_ context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := d.w.Add(n); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader stops a long import when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Reader reads a blob's bytes from its DAG.
type Reader interface {
	io.ReadSeekCloser
	io.WriterTo
	Size() uint64
}

// Open returns a reader over the UnixFS file at c. Any UnixFS file DAG is
// accepted, whatever parameters built it.
func Open(ctx context.Context, get ipld.NodeGetter, c cid.Cid) (Reader, error) {
	n, err := get.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c, err)
	}
	r, err := uio.NewDagReader(ctx, n, get)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c, err)
	}
	return r, nil
}

// DecodeBlock decodes a block of a UnixFS file DAG: a raw leaf or dag-pb.
func DecodeBlock(b blocks.Block) (ipld.Node, error) {
	switch b.Cid().Prefix().Codec {
	case cid.Raw:
		return merkledag.DecodeRawBlock(b)
	case cid.DagProtobuf:
		return merkledag.DecodeProtobufBlock(b)
	default:
		return nil, fmt.Errorf("block %s: codec %#x is not part of a UnixFS file", b.Cid(), b.Cid().Prefix().Codec)
	}
}

// Links returns the children of a block in a UnixFS file DAG: none for a raw
// leaf, the links of a dag-pb node otherwise.
func Links(n ipld.Node) ([]cid.Cid, error) {
	switch n.(type) {
	case *merkledag.RawNode:
		return nil, nil
	case *merkledag.ProtoNode:
	default:
		return nil, fmt.Errorf("block %s: codec %#x is not part of a UnixFS file", n.Cid(), n.Cid().Prefix().Codec)
	}
	ls := n.Links()
	out := make([]cid.Cid, len(ls))
	for i, l := range ls {
		out[i] = l.Cid
	}
	return out, nil
}

// AddChunks stores chunks as one UnixFS file whose leaves are the chunks,
// each a block of its own, and returns its root CID. A reader of a range
// within one chunk then fetches that block alone: a split layer index's
// windows are stored so. The chunks are read one at a time, so however
// many there are only a few are in memory.
func AddChunks(ctx context.Context, dst ipld.DAGService, chunks Chunks, maxLinks int) (cid.Cid, error) {
	if maxLinks < 2 {
		return cid.Undef, fmt.Errorf("add chunks: %d links per node", maxLinks)
	}
	l := &chunkList{ctx: ctx, chunks: chunks}
	root, err := layout(ctx, dst, l, maxLinks, cidBuilder)
	if err == nil && l.n == 0 {
		err = errors.New("add chunks: no chunks")
	}
	return root, err
}

// MaxChunk bounds a block that AddChunks stores: bitswap's limit.
const MaxChunk = 1 << 20

// Chunks gives a blob's chunks in order, one at a time: Next returns
// io.EOF after the last.
type Chunks interface {
	Next() ([]byte, error)
}

// ChunkSlice is the chunks cs.
func ChunkSlice(cs [][]byte) Chunks { return &chunkSlice{cs} }

type chunkSlice struct{ cs [][]byte }

func (s *chunkSlice) Next() ([]byte, error) {
	if len(s.cs) == 0 {
		return nil, io.EOF
	}
	c := s.cs[0]
	s.cs = s.cs[1:]
	return c, nil
}

// chunkList splits a blob where its chunks end.
type chunkList struct {
	ctx    context.Context
	chunks Chunks
	n      int // chunks given
}

func (l *chunkList) Reader() io.Reader { return nil }

func (l *chunkList) NextBytes() ([]byte, error) {
	if err := l.ctx.Err(); err != nil {
		return nil, err
	}
	c, err := l.chunks.Next()
	if err != nil {
		return nil, err
	}
	if len(c) == 0 || len(c) > MaxChunk {
		return nil, fmt.Errorf("add chunks: chunk %d of %d bytes", l.n, len(c))
	}
	l.n++
	return c, nil
}
