package image

import (
	"errors"
	"io"
)

// aheadReader reads its source in a goroutine of its own, a few chunks
// ahead of the consumer, so that work done inside the source's reads (a
// digest check) and work done by the consumer (hashing blocks, writing
// files) run on two cores instead of taking turns on one.
//
// A consumer that keeps what it reads (the importer: its blocks hold the
// bytes until they are written) takes them with Next, in slices of the
// reader's own buffers, rather than copying them out with Read; a buffer
// lent that way is left to the garbage collector, not used again.
type aheadReader struct {
	chunks chan []byte
	free   chan []byte
	stop   chan struct{}
	done   chan struct{}
	err    error // set before chunks is closed
	cur    []byte
	buf    []byte
	lent   bool // some of buf went out through Next
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
	go a.fill(r)
	return a
}

func (a *aheadReader) fill(r io.Reader) {
	defer close(a.done)
	defer close(a.chunks)
	for {
		// The chunks channel bounds how far ahead the reader runs.
		var buf []byte
		select {
		case buf = <-a.free:
		default:
			buf = make([]byte, aheadChunk)
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

// advance makes cur the next chunk read, if cur is used up; false at the
// end or on an error (a.err).
func (a *aheadReader) advance() bool {
	for len(a.cur) == 0 {
		if a.buf != nil && !a.lent {
			select {
			case a.free <- a.buf[:cap(a.buf)]:
			default:
			}
		}
		a.buf, a.lent = nil, false
		chunk, ok := <-a.chunks
		if !ok {
			return false
		}
		a.cur, a.buf = chunk, chunk
	}
	return true
}

func (a *aheadReader) Read(p []byte) (int, error) {
	if !a.advance() {
		return 0, a.err
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Next returns the next n bytes, fewer only at the end of the source, in
// a slice the reader does not use again; io.EOF when nothing is left.
// Within one of the reader's buffers (a chunk size that divides 1 MiB,
// as the layouts' do) the bytes are not copied.
func (a *aheadReader) Next(n int) ([]byte, error) {
	if !a.advance() {
		return nil, a.err
	}
	if len(a.cur) >= n {
		b := a.cur[:n:n]
		a.cur, a.lent = a.cur[n:], true
		return b, nil
	}
	b := make([]byte, 0, n)
	for len(b) < n && a.advance() {
		k := copy(b[len(b):n], a.cur)
		b, a.cur = b[:len(b)+k], a.cur[k:]
	}
	if len(b) < n && a.err != io.EOF {
		return nil, a.err
	}
	return b, nil
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
