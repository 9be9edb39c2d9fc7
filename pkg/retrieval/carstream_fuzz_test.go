package retrieval

import (
	"bufio"
	"bytes"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/shoal-ipfs/shoal/internal/pagebuf"
)

// FuzzCARStreamBlocks: whatever a peer sends as a CAR stream, reading its
// blocks ends in an error or in blocks of the sizes their sections say,
// never a panic or a buffer past maxSection; a leaf's buffer goes back to
// the pool once both its users let go.
func FuzzCARStreamBlocks(f *testing.F) {
	leaf := blocks.NewBlock(bytes.Repeat([]byte{7}, 5000))
	node := blocks.NewBlock([]byte{0x0a, 0x02, 0x08, 0x02})
	pbCID := cid.NewCidV1(cid.DagProtobuf, node.Cid().Hash())
	var stream bytes.Buffer
	w := bufio.NewWriter(&stream)
	if err := writeCARHeader(w, leaf.Cid()); err != nil {
		f.Fatal(err)
	}
	for _, b := range []struct {
		c    cid.Cid
		data []byte
	}{{leaf.Cid(), leaf.RawData()}, {pbCID, node.RawData()}} {
		if err := writeCARBlock(w, b.c, b.data); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Fatal(err)
	}
	whole := stream.Bytes()
	f.Add(whole)
	f.Add(whole[:len(whole)-3])
	f.Add(append(append([]byte{}, whole[:60]...), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, data []byte) {
		br, err := carv2.NewBlockReader(bytes.NewReader(data), carv2.WithTrustedCAR(true))
		if err != nil {
			return
		}
		cs := &carStream{br: br}
		var pool pagebuf.Pool
		for range 64 {
			b, err := cs.next(&pool)
			if err != nil {
				return
			}
			if len(b.RawData()) > maxSection {
				t.Fatalf("a block of %d bytes", len(b.RawData()))
			}
			release(b)
			release(b)
		}
	})
}
