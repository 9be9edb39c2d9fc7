package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
)

// addReference builds the DAG with boxo's own splitter and CID builder:
// what Add gives must not depend on how the chunks were hashed.
func addReference(t *testing.T, data []byte, l Layout) string {
	t.Helper()
	params := helpers.DagBuilderParams{Maxlinks: l.MaxLinks, RawLeaves: true, CidBuilder: cidBuilder, Dagserv: memDAG()}
	db, err := params.New(chunker.NewSizeSplitter(iotest.HalfReader(bytesReader(data)), l.ChunkSize))
	if err != nil {
		t.Fatal(err)
	}
	root, err := balanced.Layout(db)
	if err != nil {
		t.Fatal(err)
	}
	return root.Cid().String()
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// chunkSliceReader hands out slices of its bytes (blob.ChunkReader).
type chunkSliceReader struct{ sliceReader }

func (r *chunkSliceReader) Next(n int) ([]byte, error) {
	if len(r.b) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(r.b))
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b, nil
}

func TestPresummedLeavesGiveTheSameCIDs(t *testing.T) {
	small := Layout{Name: "small", ChunkSize: 1000, MaxLinks: 4}
	for _, size := range []int{0, 1, 999, 1000, 1001, 16 * 1000, 16*1000 + 1, 17*1000 - 1, 100 * 1000, 123457} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*31 + i>>8)
		}
		want := addReference(t, data, small)
		// One byte per read: chunks are filled across many short reads.
		got, err := Add(context.Background(), memDAG(), iotest.OneByteReader(bytesReader(data)), small)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Fatalf("%d bytes: CID %s, boxo's splitter gives %s", size, got, want)
		}
		// Chunks handed out by the reader, and the blob's digest hashed
		// with them: the same CID, and the digest crypto/sha256 gives.
		whole := sha256x.NewStream()
		got, err = AddHashing(context.Background(), memDAG(), &chunkSliceReader{sliceReader{b: data}}, small, whole)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Fatalf("%d bytes from a ChunkReader: CID %s, boxo's splitter gives %s", size, got, want)
		}
		if whole.Sum() != sha256.Sum256(data) {
			t.Fatalf("%d bytes: AddHashing's digest is not the blob's", size)
		}
	}
}

func TestPresumSplitterPassesReadErrorsOn(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytesReader(make([]byte, 2500)), iotest.ErrReader(boom))
	_, err := Add(context.Background(), memDAG(), r, Layout{Name: "small", ChunkSize: 1000, MaxLinks: 4})
	if !errors.Is(err, boom) {
		t.Fatalf("Add over a failing reader: %v, want %v", err, boom)
	}
}
