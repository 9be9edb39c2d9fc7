package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
)

// uploadIdle is how long an unfinished upload waits for its next request.
const uploadIdle = time.Hour

// upload is a blob being received. Its bytes go to a file and its sha256
// is kept running, so that finishing needs no second pass; only the bytes
// of a verified blob ever reach the block store.
type upload struct {
	mu     sync.Mutex
	id     string
	name   string
	path   string
	file   *os.File
	sha    hash.Hash
	size   int64
	active time.Time
	gone   bool
}

type uploads struct {
	dir string
	mu  sync.Mutex
	m   map[string]*upload
}

func newUploads(dir string) *uploads {
	return &uploads{dir: dir, m: map[string]*upload{}}
}

func (us *uploads) start(name string) (*upload, error) {
	id := newID()
	p := filepath.Join(us.dir, id)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start upload: %w", err)
	}
	u := &upload{id: id, name: name, path: p, file: f, sha: sha256.New(), active: time.Now()}
	us.mu.Lock()
	us.m[id] = u
	us.mu.Unlock()
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

// drop ends an upload, removing its file; the caller holds u.mu.
func (us *uploads) drop(u *upload) {
	u.gone = true
	u.file.Close()
	os.Remove(u.path)
	us.mu.Lock()
	delete(us.m, u.id)
	us.mu.Unlock()
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

// write appends r to the upload. Bytes of a request cut short stay: the
// client learns the offset from the Range header and resumes there.
func (u *upload) write(r io.Reader) error {
	n, err := io.Copy(io.MultiWriter(u.file, u.sha), r)
	u.size += n
	if err != nil {
		return errBlobUploadInvalid.with("reading the request body: %v", err)
	}
	return nil
}

// digest returns the upload's digest in the algorithm of want.
func (u *upload) digest(want digest.Digest) (digest.Digest, error) {
	if want.Algorithm() == digest.SHA256 {
		return digest.NewDigest(digest.SHA256, u.sha), nil
	}
	if _, err := u.file.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	d, err := want.Algorithm().FromReader(u.file)
	if err != nil {
		return "", err
	}
	_, err = u.file.Seek(0, io.SeekEnd)
	return d, err
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
	u, err := rg.uploads.start(rt.name)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if s := q.Get("digest"); s != "" {
		d, err := parseDigest(s)
		if err != nil {
			rg.uploads.drop(u)
			return err
		}
		if err := u.write(r.Body); err != nil {
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
	defer u.mu.Unlock()
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
	defer u.mu.Unlock()
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, ok := parseContentRange(cr)
		if !ok || start != u.size || (r.ContentLength >= 0 && end-start+1 != r.ContentLength) {
			u.setHeaders(w)
			return errRangeInvalid.with("Content-Range %q; the upload has %d bytes", cr, u.size)
		}
	}
	if err := u.write(r.Body); err != nil {
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
	defer u.mu.Unlock()
	if cr := r.Header.Get("Content-Range"); cr != "" && r.ContentLength != 0 {
		if start, _, ok := parseContentRange(cr); !ok || start != u.size {
			u.setHeaders(w)
			return errRangeInvalid.with("Content-Range %q; the upload has %d bytes", cr, u.size)
		}
	}
	if err := u.write(r.Body); err != nil {
		return err
	}
	return rg.commit(w, r, u, d)
}

func (rg *Registry) cancelUpload(w http.ResponseWriter, _ *http.Request, rt route) error {
	u, err := rg.uploads.lock(rt.name, rt.ref)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
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
	if _, err := u.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	c, err := rg.store.Add(ctx, u.file)
	if err != nil {
		return fmt.Errorf("add blob %s: %w", want, err)
	}
	if err := rg.link(ctx, u.name, want, blobRecord{CID: c.String(), Size: u.size}); err != nil {
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

func blobCreated(w http.ResponseWriter, name string, d digest.Digest) error {
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}
