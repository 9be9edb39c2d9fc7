package api

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// Chunks cross the socket framed, so that neither side holds them all: a
// big layer's index windows are hundreds of megabytes.

// writeChunks writes chunks to w framed: each a uvarint length and its
// bytes.
func writeChunks(w io.Writer, chunks blob.Chunks) error {
	bw := bufio.NewWriter(w)
	for {
		c, err := chunks.Next()
		if err == io.EOF {
			return bw.Flush()
		}
		if err != nil {
			return err
		}
		if _, err := bw.Write(binary.AppendUvarint(nil, uint64(len(c)))); err != nil {
			return err
		}
		if _, err := bw.Write(c); err != nil {
			return err
		}
	}
}

// framedChunks reads the chunks writeChunks wrote, one at a time; err is
// what was wrong with the framing, if anything.
type framedChunks struct {
	r   *bufio.Reader
	n   int
	err error
}

func (f *framedChunks) Next() ([]byte, error) {
	size, err := binary.ReadUvarint(f.r)
	if err == io.EOF {
		return nil, io.EOF
	}
	if err == nil && (size < 1 || size > blob.MaxChunk) {
		err = fmt.Errorf("chunk %d of %d bytes: want 1 to %d", f.n, size, blob.MaxChunk)
	}
	var c []byte
	if err == nil {
		c = make([]byte, size)
		if _, err = io.ReadFull(f.r, c); err != nil {
			err = fmt.Errorf("chunk %d: %w", f.n, err)
		}
	}
	if err != nil {
		f.err = err
		return nil, err
	}
	f.n++
	return c, nil
}
