package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// UploadLimits bound what unfinished uploads may hold, so that clients
// that start uploads and never finish them cannot take the daemon's
// files, disk or memory. A zero field takes its default
// (DefaultUploadLimits). Past a bound a client gets 429 TOOMANYREQUESTS
// with a Retry-After.
type UploadLimits struct {
	// Sessions is how many uploads may be unfinished at once, in all.
	Sessions int
	// PerClient is how many of them one client (an IP address) may have.
	PerClient int
	// Bytes is how many bytes all unfinished uploads may hold together.
	Bytes int64
	// Idle is how long an upload waits for its next request before it
	// is dropped, counted from the end of its last request.
	Idle time.Duration
}

// DefaultUploadLimits are the bounds of a registry not given others: an
// upload costs no open file between requests, a little memory and its
// bytes on disk.
var DefaultUploadLimits = UploadLimits{Sessions: 1024, PerClient: 128, Bytes: 32 << 30, Idle: 5 * time.Minute}

// WithUploadLimits bounds unfinished uploads; zero fields keep their
// defaults.
func WithUploadLimits(l UploadLimits) Option {
	return func(r *Registry) { r.uploadLimits = l }
}

func (l UploadLimits) withDefaults() UploadLimits {
	d := DefaultUploadLimits
	if l.Sessions > 0 {
		d.Sessions = l.Sessions
	}
	if l.PerClient > 0 {
		d.PerClient = l.PerClient
	}
	if l.Bytes > 0 {
		d.Bytes = l.Bytes
	}
	if l.Idle > 0 {
		d.Idle = l.Idle
	}
	return d
}

// retryAfter is what a client past a bound is told to wait, in seconds:
// uploads in flight usually end within it.
const retryAfter = "10"

// upload is a blob being received. Its bytes go to a file, opened for
// each request and closed at its end, and its sha256 is kept running in
// memory, so that finishing needs no second pass and an upload waiting
// for its next part holds no file open; only the bytes of a verified
// blob ever reach the block store.
type upload struct {
	mu     sync.Mutex
	id     string
	name   string
	client string
	path   string
	sha    hash.Hash
	size   int64
	active time.Time
	gone   bool
}

type uploads struct {
	dir    string
	limits UploadLimits
	mu     sync.Mutex
	m      map[string]*upload
	per    map[string]int // unfinished uploads by client
	bytes  int64          // held by all unfinished uploads
}

func newUploads(dir string, limits UploadLimits) *uploads {
	return &uploads{dir: dir, limits: limits, m: map[string]*upload{}, per: map[string]int{}}
}

// start begins an upload to repository name for client and returns it
// locked, or TOOMANYREQUESTS past the bounds on sessions.
func (us *uploads) start(name, client string) (*upload, error) {
	id := newID()
	u := &upload{id: id, name: name, client: client, path: filepath.Join(us.dir, id), sha: sha256.New(), active: time.Now()}
	u.mu.Lock()
	us.mu.Lock()
	switch {
	case len(us.m) >= us.limits.Sessions:
		us.mu.Unlock()
		return nil, errTooManyRequests.with("%d unfinished uploads, the most this registry keeps", len(us.m))
	case us.per[client] >= us.limits.PerClient:
		us.mu.Unlock()
		return nil, errTooManyRequests.with("%d unfinished uploads from %s, the most one client may have", us.per[client], client)
	}
	us.m[id] = u
	us.per[client]++
	us.mu.Unlock()
	f, err := os.OpenFile(u.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		us.drop(u)
		return nil, fmt.Errorf("start upload: %w", err)
	}
	return u, nil
}

// lock returns the upload id of repository name, locked, or
// BLOB_UPLOAD_UNKNOWN.
func (us *uploads) lock(name, id string) (*upload, error) {
	us.mu.Lock()
	u := us.m[id]
	us.mu.Unlock()
	if u == nil || u.name != name {
		return nil, errUploadUnknown.with("upload %s in %s", id, name)
	}
	u.mu.Lock()
	if u.gone {
		u.mu.Unlock()
		return nil, errUploadUnknown.with("upload %s in %s", id, name)
	}
	u.active = time.Now()
	return u, nil
}

// unlock ends a request on u. Its idle time starts now, not when the
// request began: a part may take longer to arrive than the idle bound.
func (u *upload) unlock() {
	u.active = time.Now()
	u.mu.Unlock()
}

// drop ends an upload, removing its file; the caller holds u.mu.
func (us *uploads) drop(u *upload) {
	if u.gone {
		return
	}
	u.gone = true
	os.Remove(u.path)
	us.mu.Lock()
	delete(us.m, u.id)
	if us.per[u.client]--; us.per[u.client] <= 0 {
		delete(us.per, u.client)
	}
	us.bytes -= u.size
	us.mu.Unlock()
}

// reserve grants up to n more bytes to unfinished uploads, as many as
// the bound on their bytes leaves.
func (us *uploads) reserve(n int64) int64 {
	us.mu.Lock()
	defer us.mu.Unlock()
	n = max(min(n, us.limits.Bytes-us.bytes), 0)
	us.bytes += n
	return n
}

func (us *uploads) release(n int64) {
	us.mu.Lock()
	us.bytes -= n
	us.mu.Unlock()
}

// errBytesBound is a part past the bound on the bytes of unfinished
// uploads.
func (us *uploads) errBytesBound() error {
	return errTooManyRequests.with("unfinished uploads hold %d bytes, the most this registry keeps", us.limits.Bytes)
}

// expire drops uploads idle since before cutoff.
func (us *uploads) expire(cutoff time.Time) {
	us.mu.Lock()
	var old []*upload
	for _, u := range us.m {
		old = append(old, u)
	}
	us.mu.Unlock()
	for _, u := range old {
		if !u.mu.TryLock() {
			continue // in use, so not idle
		}
		if !u.gone && u.active.Before(cutoff) {
			us.drop(u)
		}
		u.mu.Unlock()
	}
}

// write appends the request body r, of length bytes if that is not -1,
// to upload u, whose file it opens for this request only. Bytes of a
// request cut short stay: the client learns the offset from the Range
// header and resumes there. A body past the bound on the bytes of
// unfinished uploads is refused before it is read if its length says
// so, else cut where the bound is.
func (us *uploads) write(u *upload, r io.Reader, length int64) error {
	if length > 0 && length > us.limits.Bytes-us.held() {
		return us.errBytesBound()
	}
	f, err := os.OpenFile(u.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			granted := us.reserve(int64(n))
			if _, err := f.Write(buf[:granted]); err != nil {
				// The file must hold what the hash has seen, no more.
				us.release(granted)
				if terr := f.Truncate(u.size); terr != nil {
					return fmt.Errorf("upload %s: %w (and truncating it back: %v)", u.id, err, terr)
				}
				return fmt.Errorf("upload %s: %w", u.id, err)
			}
			u.sha.Write(buf[:granted])
			u.size += granted
			if granted < int64(n) {
				return us.errBytesBound()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return errBlobUploadInvalid.with("reading the request body: %v", rerr)
		}
	}
}

func (us *uploads) held() int64 {
	us.mu.Lock()
	defer us.mu.Unlock()
	return us.bytes
}

// digest returns the upload's digest in the algorithm of want.
func (u *upload) digest(want digest.Digest) (digest.Digest, error) {
	if want.Algorithm() == digest.SHA256 {
		return digest.NewDigest(digest.SHA256, u.sha), nil
	}
	f, err := os.Open(u.path)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", u.id, err)
	}
	defer f.Close()
	return want.Algorithm().FromReader(f)
}

func (u *upload) setHeaders(w http.ResponseWriter) {
	w.Header().Set("Location", "/v2/"+u.name+"/blobs/uploads/"+u.id)
	w.Header().Set("Docker-Upload-UUID", u.id)
	w.Header().Set("Range", fmt.Sprintf("0-%d", max(u.size-1, 0)))
	w.Header().Set("Content-Length", "0")
}

// startUpload is POST /v2/NAME/blobs/uploads/: a mount, a whole blob in
// one request (?digest=), or the start of an upload in parts.
func (rg *Registry) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		d, err := parseDigest(m)
		if err != nil {
			return err
		}
		mounted, err := rg.mount(ctx, rt.name, d, q.Get("from"))
		if err != nil {
			return err
		}
		if mounted {
			return blobCreated(w, rt.name, d)
		}
	}
	u, err := rg.uploads.start(rt.name, clientOf(r))
	if err != nil {
		return err
	}
	defer u.unlock()
	if s := q.Get("digest"); s != "" {
		d, err := parseDigest(s)
		if err != nil {
			rg.uploads.drop(u)
			return err
		}
		if err := rg.uploads.write(u, r.Body, r.ContentLength); err != nil {
			rg.uploads.drop(u)
			return err
		}
		return rg.commit(w, r, u, d)
	}
	u.setHeaders(w)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (rg *Registry) uploadStatus(w http.ResponseWriter, _ *http.Request, rt route) error {
	u, err := rg.uploads.lock(rt.name, rt.ref)
	if err != nil {
		return err
	}
	defer u.unlock()
	u.setHeaders(w)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// patchUpload appends a part. A Content-Range must start where the upload
// ends; without one the body is appended (a streamed upload).
func (rg *Registry) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := rg.uploads.lock(rt.name, rt.ref)
	if err != nil {
		return err
	}
	defer u.unlock()
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, ok := parseContentRange(cr)
		if !ok || start != u.size || (r.ContentLength >= 0 && end-start+1 != r.ContentLength) {
			u.setHeaders(w)
			return errRangeInvalid.with("Content-Range %q; the upload has %d bytes", cr, u.size)
		}
	}
	if err := rg.uploads.write(u, r.Body, r.ContentLength); err != nil {
		u.setHeaders(w)
		return err
	}
	u.setHeaders(w)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// parseContentRange reads "START-END" (and the "bytes START-END/*" form).
func parseContentRange(s string) (start, end int64, ok bool) {
	s = strings.TrimPrefix(s, "bytes ")
	s, _, _ = strings.Cut(s, "/")
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	return start, end, true
}

// finishUpload is the PUT that ends an upload, with a last part or none.
func (rg *Registry) finishUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		return err
	}
	u, err := rg.uploads.lock(rt.name, rt.ref)
	if err != nil {
		return err
	}
	defer u.unlock()
	if cr := r.Header.Get("Content-Range"); cr != "" && r.ContentLength != 0 {
		if start, _, ok := parseContentRange(cr); !ok || start != u.size {
			u.setHeaders(w)
			return errRangeInvalid.with("Content-Range %q; the upload has %d bytes", cr, u.size)
		}
	}
	if err := rg.uploads.write(u, r.Body, r.ContentLength); err != nil {
		u.setHeaders(w)
		return err
	}
	return rg.commit(w, r, u, d)
}

func (rg *Registry) cancelUpload(w http.ResponseWriter, _ *http.Request, rt route) error {
	u, err := rg.uploads.lock(rt.name, rt.ref)
	if err != nil {
		return err
	}
	defer u.unlock()
	rg.uploads.drop(u)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// commit checks a complete upload against its digest and, if it matches,
// adds it to IPFS and links it into the repository. A mismatch drops the
// upload: nothing of it is stored.
func (rg *Registry) commit(w http.ResponseWriter, r *http.Request, u *upload, want digest.Digest) error {
	ctx := r.Context()
	got, err := u.digest(want)
	if err != nil {
		return err
	}
	if got != want {
		rg.uploads.drop(u)
		return errDigestInvalid.with("got %s for %d bytes, the client said %s", got, u.size, want)
	}
	f, err := os.Open(u.path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	defer f.Close()
	// Under a lease: a collection between the add and the link's hold
	// would take the blob.
	err = image.WithLease(ctx, rg.store, func(image.Lease) error {
		c, err := rg.store.Add(ctx, f)
		if err != nil {
			return fmt.Errorf("add blob %s: %w", want, err)
		}
		return rg.link(ctx, u.name, want, blobRecord{CID: c.String(), Size: u.size})
	})
	if err != nil {
		return err
	}
	rg.uploads.drop(u)
	return blobCreated(w, u.name, want)
}

// link makes blob d, stored as rec, part of repository name.
func (rg *Registry) link(ctx context.Context, name string, d digest.Digest, rec blobRecord) error {
	c, err := cid.Decode(rec.CID)
	if err != nil {
		return err
	}
	if err := rg.store.Hold(ctx, blobHold(name, d), c); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if err := rg.putJSON(ctx, blobKey(name, d), rec); err != nil {
		return err
	}
	if err := rg.putJSON(ctx, digestKey(d), rec); err != nil {
		return err
	}
	if err := rg.meta.Put(ctx, nameKey(name), nil); err != nil {
		return err
	}
	return rg.meta.Sync(ctx, repoKey(name))
}

// mount links a blob another repository holds, or with from empty any
// blob this registry holds. It reports false when there is no such blob,
// and the client uploads it instead.
func (rg *Registry) mount(ctx context.Context, name string, d digest.Digest, from string) (bool, error) {
	var rec blobRecord
	var ok bool
	var err error
	if from != "" {
		if checkName(from) != nil {
			return false, nil
		}
		rec, ok, err = rg.blob(ctx, from, d)
	} else {
		ok, err = rg.getJSON(ctx, digestKey(d), &rec)
	}
	if err != nil || !ok {
		return false, err
	}
	if err := rg.link(ctx, name, d, rec); err != nil {
		// The blocks went at a GC since: upload it again.
		rg.log.Debug("registry: mount failed, asking for an upload", "digest", d, "err", err)
		return false, nil
	}
	return true, nil
}

// clientOf names the client of a request for the bounds per client: its
// IP address. Behind a proxy every client is the proxy.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func blobCreated(w http.ResponseWriter, name string, d digest.Digest) error {
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}
