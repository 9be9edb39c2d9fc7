package image

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestAheadReaderLendsWhatItRead: chunks taken with Next, of sizes that
// divide the reader's buffers and of sizes that straddle them, mixed with
// Read, give back the source byte for byte, and a chunk keeps its bytes
// while the reader goes on.
func TestAheadReaderLendsWhatItRead(t *testing.T) {
	data := make([]byte, 5*aheadChunk/2+123)
	for i := range data {
		data[i] = byte(i*7 + i>>10)
	}
	for _, size := range []int{256 << 10, aheadChunk, 300000, 1} {
		a := readAhead(iotest.HalfReader(bytes.NewReader(data)))
		var chunks [][]byte
		var got []byte
		for i := 0; ; i++ {
			if i%3 == 2 { // now and then a Read in between
				p := make([]byte, 1000)
				n, err := a.Read(p)
				got = append(got, p[:n]...)
				chunks = append(chunks, p[:n])
				if err == io.EOF {
					break
				}
				continue
			}
			c, err := a.Next(size)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c) < size && len(got)+len(c) != len(data) {
				t.Fatalf("chunk of %d: %d bytes before the end", size, len(c))
			}
			got = append(got, c...)
			chunks = append(chunks, c)
		}
		a.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("chunks of %d: the bytes differ from the source", size)
		}
		// Every chunk still holds what it held when it was taken.
		if !bytes.Equal(bytes.Join(chunks, nil), data) {
			t.Fatalf("chunks of %d: a chunk changed after it was taken", size)
		}
	}
}

func TestAheadReaderPassesErrorsOn(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(bytes.NewReader(make([]byte, aheadChunk+aheadChunk/2)), iotest.ErrReader(boom))
	a := readAhead(src)
	defer a.Close()
	for {
		_, err := a.Next(300000)
		if err == nil {
			continue
		}
		if !errors.Is(err, boom) {
			t.Fatalf("Next: %v, want the source's error", err)
		}
		return
	}
}
