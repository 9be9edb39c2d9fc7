package image

import (
	"errors"
	"io"
)

// aheadReader reads its source in a goroutine of its own, a few chunks
// ahead of the consumer, so that work done inside the source's reads (a
// digest check) and work done by the consumer (hashing blocks, writing
// files) run on two cores instead of taking turns on one.
type aheadReader struct {
	chunks chan []byte
	free   chan []byte
	stop   chan struct{}
	done   chan struct{}
	err    error // set before chunks is closed
	cur    []byte
	buf    []byte
}

const (
	aheadChunk = 1 << 20
	aheadDepth = 4
)

func readAhead(r io.Reader) *aheadReader {
	a := &aheadReader{
		chunks: make(chan []byte, aheadDepth),
		free:   make(chan []byte, aheadDepth+2),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for range aheadDepth + 2 {
		a.free <- make([]byte, aheadChunk)
	}
	go a.fill(r)
	return a
}

func (a *aheadReader) fill(r io.Reader) {
	defer close(a.done)
	defer close(a.chunks)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.stop:
			a.err = errors.New("read ahead: closed")
			return
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			select {
			case a.chunks <- buf[:n]:
			case <-a.stop:
				a.err = errors.New("read ahead: closed")
				return
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			a.err = io.EOF
			return
		}
		if err != nil {
			a.err = err
			return
		}
	}
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.buf != nil {
			a.free <- a.buf[:cap(a.buf)]
			a.buf = nil
		}
		chunk, ok := <-a.chunks
		if !ok {
			return 0, a.err
		}
		a.cur, a.buf = chunk, chunk
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Close stops the goroutine and waits for it; the source is not read again.
func (a *aheadReader) Close() error {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	for range a.chunks {
	}
	<-a.done
	return nil
}
