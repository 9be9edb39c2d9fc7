package registry

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// DefaultClientTimeout is how long a client may leave a request waiting,
// neither sending its body nor reading the response, unless
// WithClientTimeout says otherwise.
const DefaultClientTimeout = time.Minute

// WithClientTimeout cuts off a request whose client sends no byte of its
// body, or takes no byte of the response, for d. The deadline moves with
// every read and write, so a slow client moving a large blob goes on as
// long as it moves, and one that stops lets go of what its request holds
// (an upload's lock, a blob's reader) within d.
func WithClientTimeout(d time.Duration) Option { return func(r *Registry) { r.clientTimeout = d } }

// deadlines keeps the connection of one request under the client timeout:
// a write deadline moved before every write and a read deadline moved
// before every read of the body. A server-wide ReadTimeout or
// WriteTimeout would bound a whole request instead, and cut off a large
// blob at a slow client however well it moves.
type deadlines struct {
	http.ResponseWriter
	rc   *http.ResponseController
	d    time.Duration
	body *deadlineBody
}

func (rg *Registry) withDeadlines(w http.ResponseWriter, r *http.Request) *deadlines {
	dl := &deadlines{ResponseWriter: w, rc: http.NewResponseController(w), d: rg.clientTimeout}
	if r.Body != nil && r.Body != http.NoBody {
		dl.body = &deadlineBody{ReadCloser: r.Body, dl: dl}
		r.Body = dl.body
	}
	// A deadline left by an earlier request on this connection may have
	// passed already.
	dl.extendWrite()
	return dl
}

func (dl *deadlines) Write(p []byte) (int, error) {
	dl.extendWrite()
	return dl.ResponseWriter.Write(p)
}

func (dl *deadlines) Unwrap() http.ResponseWriter { return dl.ResponseWriter }

// extendWrite gives the next write the client timeout. Writers that
// cannot take deadlines (a test's recorder) go without.
func (dl *deadlines) extendWrite() { _ = dl.rc.SetWriteDeadline(time.Now().Add(dl.d)) }

// done runs as the handler returns. The server still flushes the
// response, and reads what the handler left of the body to reuse the
// connection: both get the client timeout too.
func (dl *deadlines) done() {
	dl.extendWrite()
	if dl.body != nil && !dl.body.eof {
		_ = dl.rc.SetReadDeadline(time.Now().Add(dl.d))
	}
}

type deadlineBody struct {
	io.ReadCloser
	dl  *deadlines
	eof bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	_ = b.dl.rc.SetReadDeadline(time.Now().Add(b.dl.d))
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		// Once the body is read, the server reads the connection in the
		// background to learn that the client went away; a deadline left
		// set would end that read, and cancel the request with it. A
		// body cut off keeps its deadline, passed, so that nothing waits
		// for the rest of it.
		b.eof = true
		_ = b.dl.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
