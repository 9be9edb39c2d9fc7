package api

import (
	"bufio"
	"bytes"
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
		rest := body
		for i, c := range chunks {
			at := bytes.Index(rest[1:], c) // past at least one length byte
			if at < 0 {
				t.Fatalf("chunk %d is not in what is left of the body", i)
			}
			rest = rest[1+at+len(c):]
		}
		if len(rest) != 0 {
			t.Fatalf("%d bytes after the last chunk read without an error", len(rest))
		}
	})
}
