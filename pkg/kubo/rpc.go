package kubo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Error is a failure kubo reported for a command.
type Error struct {
	Command string // e.g. "pin/add"
	Message string // kubo's own words
	Status  int    // the HTTP status, 200 for errors kubo sends after the output began
}

func (e *Error) Error() string { return "kubo " + e.Command + ": " + e.Message }

// notExist says whether err is kubo's "file does not exist" of an MFS path.
func notExist(err error) bool {
	var ke *Error
	return errors.As(err, &ke) && strings.Contains(ke.Message, "file does not exist")
}

// rpc calls commands of kubo's RPC API: POST /api/v0/COMMAND?args.
type rpc struct {
	addr Address
	http *http.Client
	base string // scheme://host; the transport dials addr whatever the host
}

func newRPC(addr Address) *rpc {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	host := addr.dial
	if addr.network == "unix" {
		host = "kubo" // a placeholder: the transport dials the socket
	}
	return &rpc{
		addr: addr,
		base: addr.scheme + "://" + host,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, addr.network, addr.dial)
			},
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}},
	}
}

// call runs command and returns its output, which the caller must close.
// A failure kubo reports, before or after the output began, is an *Error;
// a daemon that does not answer gets an error saying what to do.
func (r *rpc) call(ctx context.Context, command string, args url.Values, body io.Reader, contentType string) (io.ReadCloser, error) {
	u := r.base + "/api/v0/" + command
	if len(args) > 0 {
		u += "?" + args.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("kubo %s: %w", command, context.Cause(ctx))
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("kubo API at %s does not answer (%v): is `ipfs daemon` running? Give --ipfs-api the multiaddr in its repository's api file, or --ipfs-api=auto with IPFS_PATH set", r.addr, err)
		}
		return nil, fmt.Errorf("kubo %s: %w", command, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer drain(resp.Body)
		return nil, responseError(command, resp)
	}
	return &output{command: command, resp: resp}, nil
}

// responseError is kubo's error for a failed command: a JSON body with a
// Message, or for requests kubo does not route (404, 405) plain text.
func responseError(command string, resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct{ Message string }
	if json.Unmarshal(data, &body) != nil || body.Message == "" {
		body.Message = strings.TrimSpace(string(data))
		if body.Message == "" {
			body.Message = resp.Status
		}
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		body.Message += " (is this kubo's RPC API, not its gateway? kubo prints both addresses as it starts)"
	}
	return &Error{Command: command, Message: body.Message, Status: resp.StatusCode}
}

// output is a command's streamed output. kubo reports a failure after the
// output began in the X-Stream-Error trailer, which Read turns into an
// *Error at the end of the body instead of a clean EOF.
type output struct {
	command string
	resp    *http.Response
}

func (o *output) Read(p []byte) (int, error) {
	n, err := o.resp.Body.Read(p)
	if errors.Is(err, io.EOF) {
		if msg := o.resp.Trailer.Get("X-Stream-Error"); msg != "" {
			return n, &Error{Command: o.command, Message: msg, Status: o.resp.StatusCode}
		}
	}
	return n, err
}

func (o *output) Close() error { return o.resp.Body.Close() }

// drain reads what is left of a small body so the connection is reused.
func drain(r io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	r.Close()
}

// stream runs command and decodes its output, a stream of JSON values,
// handing each to each (which may be nil). The whole output is read, so an
// error kubo reports at its end counts.
func stream[T any](ctx context.Context, r *rpc, command string, args url.Values, each func(T)) error {
	out, err := r.call(ctx, command, args, nil, "")
	if err != nil {
		return err
	}
	defer out.Close()
	return decodeStream(command, out, each)
}

// decodeStream decodes a stream of JSON values from out.
func decodeStream[T any](command string, out io.Reader, each func(T)) error {
	dec := json.NewDecoder(out)
	for {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return nil
		}
		var ke *Error
		if errors.As(err, &ke) {
			return err
		}
		if err != nil {
			return fmt.Errorf("kubo %s: reading its answer: %w", command, err)
		}
		if each != nil {
			each(v)
		}
	}
}

// one runs command and decodes its output, one JSON value (the last, if
// kubo sends several), into v.
func one[T any](ctx context.Context, r *rpc, command string, args url.Values, v *T) error {
	return stream(ctx, r, command, args, func(got T) { *v = got })
}

// run runs command for its effect, ignoring its output but not its errors.
func run(ctx context.Context, r *rpc, command string, args url.Values) error {
	return stream[json.RawMessage](ctx, r, command, args, nil)
}
