package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifestTypes are what Resolve and Manifest accept, the OCI and Docker
// manifests and indexes.
var manifestTypes = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// maxManifest bounds a manifest or index.
const maxManifest = 4 << 20

// Option changes a client.
type Option func(*Client)

// WithHTTPClient sends the client's requests through c.
func WithHTTPClient(c *http.Client) Option { return func(cl *Client) { cl.http = c } }

// WithUserAgent names the client in its requests.
func WithUserAgent(ua string) Option { return func(cl *Client) { cl.userAgent = ua } }

// Client talks to one upstream registry. It is safe for concurrent use.
type Client struct {
	ep        Endpoint
	base      string
	http      *http.Client
	userAgent string

	mu sync.Mutex
	// scheme is the auth scheme the registry asked for last ("basic",
	// "bearer"), sent up front from then on.
	scheme string
	tokens tokenCache
}

// New returns a client of ep.
func New(ep Endpoint, opts ...Option) *Client {
	c := &Client{ep: ep, base: ep.BaseURL(), userAgent: "shoal", tokens: newTokenCache(1024)}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = defaultHTTPClient()
	}
	return c
}

// defaultHTTPClient fails fast on a registry that does not answer, and
// bounds nothing else: a blob may take long.
func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}}
}

// Endpoint is the registry the client talks to.
func (c *Client) Endpoint() Endpoint { return c.ep }

// Resolve finds what ref (a tag or a digest) of repo names.
func (c *Client) Resolve(ctx context.Context, repo, ref, auth string) (ocispec.Descriptor, error) {
	desc, err := c.Check(ctx, repo, ref, auth)
	if err != nil || desc.Digest != "" {
		return desc, err
	}
	// Not every registry says it all on HEAD.
	_, desc, err = c.Manifest(ctx, repo, ref, auth)
	return desc, err
}

// Manifest fetches a manifest or index, checked against ref when ref is a
// digest, and against the Docker-Content-Digest header when there is one.
func (c *Client) Manifest(ctx context.Context, repo, ref, auth string) ([]byte, ocispec.Descriptor, error) {
	what := fmt.Sprintf("manifest %s:%s", repo, ref)
	resp, err := c.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, repo, auth, http.Header{"Accept": {manifestTypes}})
	if err != nil {
		return nil, ocispec.Descriptor{}, c.wrap(what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, ocispec.Descriptor{}, c.wrap(what, unavailable(ctx, err))
	}
	if len(data) > maxManifest {
		return nil, ocispec.Descriptor{}, c.wrap(what, fmt.Errorf("larger than %d bytes: %w", maxManifest, errdefs.ErrInvalidArgument))
	}
	alg := digest.Canonical
	want, refErr := digest.Parse(ref)
	if refErr == nil {
		alg = want.Algorithm()
	} else if h, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		want, alg = h, h.Algorithm()
	}
	if !alg.Available() {
		return nil, ocispec.Descriptor{}, c.wrap(what, fmt.Errorf("digest algorithm %s: %w", alg, errdefs.ErrNotImplemented))
	}
	got := alg.FromBytes(data)
	if want != "" && got != want {
		return nil, ocispec.Descriptor{}, c.wrap(what, fmt.Errorf("the registry sent bytes that hash to %s, not %s: %w", got, want, errdefs.ErrDataLoss))
	}
	mt := mediaType(resp.Header.Get("Content-Type"))
	var fields struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(data, &fields) == nil && fields.MediaType != "" {
		mt = fields.MediaType
	}
	return data, ocispec.Descriptor{MediaType: mt, Digest: got, Size: int64(len(data))}, nil
}

// Blob fetches blob d from offset. size is the whole blob's size, -1 if
// the registry does not say.
func (c *Client) Blob(ctx context.Context, repo string, d digest.Digest, offset int64, auth string) (io.ReadCloser, int64, error) {
	what := fmt.Sprintf("blob %s@%s", repo, d)
	h := http.Header{}
	if offset > 0 {
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), repo, auth, h)
	var se *statusErr
	if offset > 0 && errors.As(err, &se) && se.status == http.StatusRequestedRangeNotSatisfiable {
		// Some registries take only closed ranges: the whole blob, then.
		resp, err = c.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), repo, auth, nil)
	}
	if err != nil {
		return nil, 0, c.wrap(what, err)
	}
	size := int64(-1)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var first, last, total int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &total); err != nil || first != offset {
			resp.Body.Close()
			return nil, 0, c.wrap(what, fmt.Errorf("Content-Range %q for offset %d: %w", resp.Header.Get("Content-Range"), offset, errdefs.ErrUnknown))
		}
		size = total
	default:
		if resp.ContentLength >= 0 {
			size = resp.ContentLength
		}
		// The whole blob: skip to offset.
		if offset > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, 0, c.wrap(what, unavailable(ctx, err))
			}
		}
	}
	return resp.Body, size, nil
}

// Check tells whether auth may pull repo: nil, or an error of kind
// unauthorized (no or unknown credentials), permission denied, not found
// or unavailable. It asks with a HEAD of manifest ref and returns what
// that says ref is, or a zero descriptor if it does not say it all.
func (c *Client) Check(ctx context.Context, repo, ref, auth string) (ocispec.Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, repo, auth, http.Header{"Accept": {manifestTypes}})
	if err != nil {
		return ocispec.Descriptor{}, c.wrap(fmt.Sprintf("manifest %s:%s", repo, ref), err)
	}
	resp.Body.Close()
	d, derr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	size := resp.ContentLength
	mt := mediaType(resp.Header.Get("Content-Type"))
	if derr != nil || size <= 0 || mt == "" {
		return ocispec.Descriptor{}, nil
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: size}, nil
}

func (c *Client) wrap(what string, err error) error {
	return fmt.Errorf("upstream %s: %s: %w", c.ep.Registry, what, err)
}

// mediaType is a Content-Type without its parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(mt)
}

// unavailable is the kind of a failed exchange: the caller's context
// ending is its own doing, anything else the registry's.
func unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return fmt.Errorf("%v: %w", err, errdefs.ErrUnavailable)
}

// statusError is the error of a response that is no success.
func statusError(resp *http.Response) error {
	msg := resp.Status
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if resp.Body != nil {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if json.Unmarshal(data, &body) == nil && len(body.Errors) > 0 {
			msg += ": " + body.Errors[0].Code + " " + body.Errors[0].Message
		}
	}
	var kind error
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound:
		kind = errdefs.ErrNotFound
	case s == http.StatusUnauthorized:
		kind = errdefs.ErrUnauthenticated
	case s == http.StatusForbidden:
		kind = errdefs.ErrPermissionDenied
	case s == http.StatusTooManyRequests, s >= 500:
		kind = errdefs.ErrUnavailable
	default:
		kind = errdefs.ErrUnknown
	}
	return &statusErr{status: resp.StatusCode, msg: msg, kind: kind}
}

// statusErr is a response's failure, of an errdefs kind.
type statusErr struct {
	status int
	msg    string
	kind   error
}

func (e *statusErr) Error() string { return e.msg }
func (e *statusErr) Unwrap() error { return e.kind }

// ok tells whether a response is a success.
func ok(resp *http.Response) bool { return resp.StatusCode >= 200 && resp.StatusCode < 300 }

var errNoCredentials = errors.New("no credentials")
