package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

func (rg *Registry) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	if root, ok := IPFSRoot(rt.name); ok {
		t, err := rg.trees.get(r.Context(), root)
		if err != nil {
			return err
		}
		if data, ok := t.Docs[d]; ok {
			// A document of the image, in memory already.
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Docker-Content-Digest", d.String())
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
			return nil
		}
	}
	desc, err := rg.blobDescriptor(r.Context(), rt.name, d)
	if err != nil {
		return err
	}
	return rg.serveContent(w, r, desc, "application/octet-stream")
}

// blobDescriptor finds blob d of a repository, with its CID in its urls.
func (rg *Registry) blobDescriptor(ctx context.Context, name string, d digest.Digest) (ocispec.Descriptor, error) {
	if root, ok := IPFSRoot(name); ok {
		t, err := rg.trees.get(ctx, root)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		desc, ok := t.Blobs[d]
		if !ok {
			return desc, errBlobUnknown.with("%s is not in image %s", d, root)
		}
		// Every blob of an image pinned here was checked against its
		// digest when it was pushed or pulled.
		if _, err := rg.store.Image(ctx, root); err == nil {
			rg.noteVerified(desc)
		}
		return desc, nil
	}
	b, ok, err := rg.blob(ctx, name, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if !ok {
		return ocispec.Descriptor{}, errBlobUnknown.with("%s@%s", name, d)
	}
	// A repository links only blobs whose upload matched the digest.
	desc, err := b.descriptor(d, "")
	if err == nil {
		rg.noteVerified(desc)
	}
	return desc, err
}

// The pairs of CID and digest known to match. Content addressing makes
// the fact permanent: every block read under the CID is checked against
// it (local ones as they are read), so the same bytes come
// back, and hashing them again for the digest would only cost time.
func verifiedKey(d ocispec.Descriptor) (string, bool) {
	c, err := image.CIDOf(d)
	if err != nil {
		return "", false
	}
	return c.KeyString() + "@" + d.Digest.String(), true
}

func (rg *Registry) noteVerified(d ocispec.Descriptor) {
	if k, ok := verifiedKey(d); ok {
		rg.verified.Add(k, struct{}{})
	}
}

func (rg *Registry) isVerified(d ocispec.Descriptor) bool {
	k, ok := verifiedKey(d)
	return ok && rg.verified.Contains(k)
}

// serveContent streams a blob or manifest: HEAD answers from the descriptor
// alone; GET reads the blob from the store, which verifies every block
// against its CID as it arrives from peers, and checks the whole against
// the digest. A response whose bytes turn out wrong, or whose peers stop
// sending, is cut off rather than ended cleanly, so that no client takes
// it for the blob. A Range request gets 206 and those bytes.
func (rg *Registry) serveContent(w http.ResponseWriter, r *http.Request, d ocispec.Descriptor, contentType string) error {
	return rg.serveBody(w, r, d, contentType, body{open: rg.catFrom(d)})
}

// body is where serveBody reads a blob.
type body struct {
	// open reads the blob from an offset.
	open func(ctx context.Context, offset int64) (io.ReadCloser, error)
	// verified says the reader checks the digest itself: it ends with
	// io.EOF only once the whole blob has matched.
	verified bool
	// served, if set, is told that a response sent the whole blob;
	// mismatch, that the bytes read did not match the digest.
	served, mismatch func()
}

// catFrom reads blob d from the store under its CID.
func (rg *Registry) catFrom(d ocispec.Descriptor) func(context.Context, int64) (io.ReadCloser, error) {
	return func(ctx context.Context, start int64) (io.ReadCloser, error) {
		c, err := image.CIDOf(d)
		if err != nil {
			return nil, err
		}
		return image.CatAt(ctx, rg.store, c, start)
	}
}

// serveBody is serveContent reading from b.
func (rg *Registry) serveBody(w http.ResponseWriter, r *http.Request, d ocispec.Descriptor, contentType string, b body) error {
	h := w.Header()
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	h.Set("Content-Type", contentType)
	h.Set("Docker-Content-Digest", d.Digest.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+d.Digest.String()+`"`)
	start, end, partial, err := parseRange(r.Header.Get("Range"), d.Size)
	if err != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", d.Size))
		return err
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, d.Size))
	}
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}
	ctx, kick, stop := image.IdleTimeout(r.Context(), rg.timeout)
	defer stop()
	rc, err := b.open(ctx, start)
	if err != nil {
		return rg.unavailable(ctx, d, err)
	}
	defer rc.Close()
	in := io.LimitReader(rc, end-start)
	var verifier digest.Verifier
	if !partial && !b.verified && !rg.isVerified(d) {
		verifier = d.Digest.Verifier()
		in = io.TeeReader(in, verifier)
	}
	// Headers go out only once the first bytes are here, so that content
	// no peer has gets an error response rather than a stalled 200. The
	// last bytes are held back until the digest is checked: a response
	// cut short is one no client mistakes for the blob.
	size := end - start
	cur, next := make([]byte, 256<<10), make([]byte, 256<<10)
	n, err := io.ReadFull(in, cur[:min(int64(len(cur)), size)])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return rg.unavailable(ctx, d, err)
	}
	kick()
	w.WriteHeader(status)
	pending, read := cur[:n], int64(n)
	for read < size {
		m, err := io.ReadFull(in, next[:min(int64(len(next)), size-read)])
		if m > 0 {
			kick()
			if _, werr := w.Write(pending); werr != nil {
				return nil // the client went away
			}
			pending, cur, next = next[:m], next, cur
			read += int64(m)
		}
		if err != nil {
			break
		}
	}
	if read != size || (verifier != nil && !verifier.Verified()) {
		rg.log.Warn("registry: cutting off a blob that did not verify", "digest", d.Digest, "read", read, "size", size, "err", context.Cause(ctx))
		if read == size && b.mismatch != nil {
			b.mismatch()
		}
		panic(http.ErrAbortHandler)
	}
	if _, err := w.Write(pending); err != nil {
		return nil
	}
	if verifier != nil {
		rg.noteVerified(d)
	}
	if b.served != nil && !partial {
		b.served()
	}
	return nil
}

// unavailable explains a blob that could not be read.
func (rg *Registry) unavailable(ctx context.Context, d ocispec.Descriptor, err error) error {
	if errors.Is(context.Cause(ctx), image.ErrTimeout) {
		return errBlobUnknown.with("%s: no peer sent it within %s", d.Digest, rg.timeout)
	}
	return fmt.Errorf("read %s: %w", d.Digest, err)
}

// parseRange reads a single "bytes=" range; without one, the whole size.
// A range it accepts is never empty: 0 <= start < end <= size. The
// numbers are the client's, so they are compared with size before any
// arithmetic on them (the last byte may be the largest int64).
func parseRange(s string, size int64) (start, end int64, partial bool, err error) {
	if s == "" {
		return 0, size, false, nil
	}
	spec, ok := strings.CutPrefix(s, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, errRangeInvalid.with("range %q", s)
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false, errRangeInvalid.with("range %q", s)
	}
	switch {
	case first == "": // the last N bytes
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n <= 0 || size == 0 {
			return 0, 0, false, errRangeInvalid.with("range %q of %d bytes", s, size)
		}
		return size - min(n, size), size, true, nil
	default:
		start, perr := strconv.ParseInt(first, 10, 64)
		if perr != nil || start < 0 || start >= size {
			return 0, 0, false, errRangeInvalid.with("range %q of %d bytes", s, size)
		}
		end := size
		if last != "" {
			l, perr := strconv.ParseInt(last, 10, 64)
			if perr != nil || l < start {
				return 0, 0, false, errRangeInvalid.with("range %q", s)
			}
			if l < size-1 {
				end = l + 1
			}
		}
		return start, end, true, nil
	}
}

func (rg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	d, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	if _, ok, err := rg.blob(ctx, rt.name, d); err != nil {
		return err
	} else if !ok {
		return errBlobUnknown.with("%s@%s", rt.name, d)
	}
	if err := rg.meta.Delete(ctx, blobKey(rt.name, d)); err != nil {
		return err
	}
	if err := rg.meta.Sync(ctx, repoKey(rt.name)); err != nil {
		return err
	}
	if err := rg.store.Release(ctx, blobHold(rt.name, d)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
