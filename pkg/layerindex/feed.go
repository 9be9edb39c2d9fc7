package layerindex

import (
	"fmt"
	"io"
	"os"
)

// checkpointFeed hands a gzip layer's bytes to the checkpoint pass of a
// zTOC build through a pipe, only as far as the tar pass has read them.
// The checkpoint pass is zlib's, in C: it opens the layer by name and
// reads it to its end, and nothing stops it from Go. Fed this way it
// inflates no more than the tar pass, which checks the layer against its
// bound, and ends when the tar pass does. A nil feed feeds nothing.
type checkpointFeed struct {
	r, w   *os.File
	chunks chan []byte
}

func newCheckpointFeed() (*checkpointFeed, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// A few chunks of lag let the passes run side by side.
	f := &checkpointFeed{r: r, w: w, chunks: make(chan []byte, 16)}
	go f.run()
	return f, nil
}

// path names the pipe for the checkpoint pass to open.
func (f *checkpointFeed) path() string { return fmt.Sprintf("/dev/fd/%d", f.r.Fd()) }

// run writes the chunks to the pipe. Once the checkpoint pass has stopped
// reading (it failed, or the pipe's read end is closed) the rest are
// dropped, so that the tar pass never waits for a reader that is gone.
func (f *checkpointFeed) run() {
	broken := false
	for c := range f.chunks {
		if !broken {
			_, err := f.w.Write(c)
			broken = err != nil
		}
	}
	f.w.Close()
}

// tee returns r, whose reads also go to the checkpoint pass.
func (f *checkpointFeed) tee(r io.Reader) io.Reader {
	if f == nil {
		return r
	}
	return teeFeed{r: r, f: f}
}

type teeFeed struct {
	r io.Reader
	f *checkpointFeed
}

func (t teeFeed) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.f.chunks <- append([]byte(nil), p[:n]...)
	}
	return n, err
}

// done ends the layer as the checkpoint pass sees it: at its end if the
// tar pass read it all, else early, which fails the checkpoint pass.
func (f *checkpointFeed) done() {
	if f != nil {
		close(f.chunks)
	}
}

// closeReader closes the pipe's read end once the checkpoint pass is
// over, so that what is still written to it is dropped.
func (f *checkpointFeed) closeReader() {
	if f != nil {
		f.r.Close()
	}
}
