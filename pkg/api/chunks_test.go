package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// FuzzFramedChunks: any body either fails as framed chunks, or gives
// chunks, none empty and each within blob.MaxChunk, that it holds whole,
// each after a length of at least one byte.
func FuzzFramedChunks(f *testing.F) {
	var seed bytes.Buffer
	writeChunks(&seed, blob.ChunkSlice([][]byte{[]byte("first window"), bytes.Repeat([]byte("w"), 300)}))
	f.Add(seed.Bytes())
	f.Add([]byte("\x05hello\x09world"))
	f.Add([]byte("\x00"))
	f.Add([]byte("\xff\xff\xff\x7f"))
	f.Add([]byte("\x85\x00hello")) // a length not in its shortest form
	f.Fuzz(func(t *testing.T, body []byte) {
		fc := &framedChunks{r: bufio.NewReader(bytes.NewReader(body))}
		var chunks [][]byte
		for {
			c, err := fc.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if fc.err == nil {
					t.Fatalf("error %v not recorded as the framing's", err)
				}
				return
			}
			if len(c) == 0 || len(c) > blob.MaxChunk {
				t.Fatalf("chunk of %d bytes accepted", len(c))
			}
			chunks = append(chunks, c)
		}
		// Each chunk is its length, in any varint form the reader takes,
		// then its bytes: searching for the bytes instead found a chunk of
		// zeros inside a long form of its own length.
		rest := body
		for i, c := range chunks {
			size, k := binary.Uvarint(rest)
			if k <= 0 || size != uint64(len(c)) || len(rest) < k+len(c) || !bytes.Equal(rest[k:k+len(c)], c) {
				t.Fatalf("chunk %d is not what is left of the body, framed", i)
			}
			rest = rest[k+len(c):]
		}
		if len(rest) != 0 {
			t.Fatalf("%d bytes after the last chunk read without an error", len(rest))
		}
	})
}
