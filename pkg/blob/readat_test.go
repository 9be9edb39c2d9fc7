package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// countingGetter counts the blocks asked of it.
type countingGetter struct {
	ipld.DAGService
	got int
}

func (c *countingGetter) Get(ctx context.Context, k cid.Cid) (ipld.Node, error) {
	c.got++
	return c.DAGService.Get(ctx, k)
}

func (c *countingGetter) GetMany(ctx context.Context, ks []cid.Cid) <-chan *ipld.NodeOption {
	c.got += len(ks)
	return c.DAGService.GetMany(ctx, ks)
}

func TestReadAtReadsWhatADAGReaderReads(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 70<<20+12345) // three levels with kubo's layout
	rand.New(rand.NewSource(1)).Read(data)
	for _, l := range []Layout{Kubo, V1_2025} {
		dag := memDAG()
		root, err := Add(ctx, dag, bytes.NewReader(data), l)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewSource(2))
		for i := 0; i < 200; i++ {
			off := rng.Int63n(int64(len(data)) + 10)
			p := make([]byte, rng.Intn(3<<20))
			n, err := ReadAt(ctx, dag, root, p, off)
			want := max(0, min(len(p), len(data)-int(min(off, int64(len(data))))))
			if n != want || (n < len(p)) != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
				t.Fatalf("%s: ReadAt(%d bytes at %d) = %d, %v; want %d", l.Name, len(p), off, n, err, want)
			}
			if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
				t.Fatalf("%s: wrong bytes at %d", l.Name, off)
			}
		}
	}
}

func TestReadAtFetchesOnlyTheBlocksItReads(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 20<<20)
	rand.New(rand.NewSource(3)).Read(data)
	dag := memDAG()
	root, err := Add(ctx, dag, bytes.NewReader(data), Kubo)
	if err != nil {
		t.Fatal(err)
	}
	g := &countingGetter{DAGService: dag}
	// 100 bytes across a chunk boundary: the root and two leaves.
	if _, err := ReadAt(ctx, g, root, make([]byte, 100), 256<<10-50); err != nil {
		t.Fatal(err)
	}
	if g.got != 3 {
		t.Errorf("asked for %d blocks, want 3", g.got)
	}
}

// TestAddChunksMakesABlockPerChunk: a read within one chunk of a blob
// added by AddChunks asks for the root and that chunk's block only.
func TestAddChunksMakesABlockPerChunk(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewSource(4))
	var chunks [][]byte
	for range 400 { // more than one node's links: two levels
		c := make([]byte, 1000+r.Intn(20_000))
		r.Read(c)
		chunks = append(chunks, c)
	}
	dag := memDAG()
	root, err := AddChunks(ctx, dag, ChunkSlice(chunks), 174)
	if err != nil {
		t.Fatal(err)
	}
	all := bytes.Join(chunks, nil)
	at := int64(len(bytes.Join(chunks[:300], nil)))
	g := &countingGetter{DAGService: dag}
	got := make([]byte, len(chunks[300]))
	if _, err := ReadAt(ctx, g, root, got, at); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, chunks[300]) {
		t.Fatal("chunk 300 read back wrong")
	}
	if g.got != 3 { // root, the interior node, the chunk
		t.Errorf("asked for %d blocks, want 3", g.got)
	}
	whole := make([]byte, len(all))
	if _, err := ReadAt(ctx, dag, root, whole, 0); err != nil || !bytes.Equal(whole, all) {
		t.Fatalf("the blob reads back wrong (%v)", err)
	}
	if _, err := AddChunks(ctx, dag, ChunkSlice([][]byte{{}}), 174); err == nil {
		t.Error("an empty chunk was added")
	}
	if _, err := AddChunks(ctx, dag, ChunkSlice(nil), 174); err == nil {
		t.Error("no chunks added as a blob")
	}
}
