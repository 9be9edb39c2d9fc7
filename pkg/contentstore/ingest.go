package contentstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// An ingest in progress is a directory under the store's ingest directory,
// named by the digest of its ref, holding the data written so far and
// what the writer said of the blob. It outlives the writer, so that a
// pull that stopped resumes where it was.
type ingestMeta struct {
	Ref       string        `json:"ref"`
	Total     int64         `json:"total,omitempty"`
	Expected  digest.Digest `json:"expected,omitempty"`
	StartedAt time.Time     `json:"startedAt"`
}

func (s *Store) makeIngestDir() error {
	if err := os.MkdirAll(s.ingest, 0o700); err != nil {
		return fmt.Errorf("content store: %w", err)
	}
	return nil
}

func (s *Store) ingestDir(ref string) string {
	return filepath.Join(s.ingest, digest.FromString(ref).Encoded())
}

func readIngest(dir string) (ingestMeta, error) {
	var m ingestMeta
	data, err := os.ReadFile(filepath.Join(dir, "ingest.json"))
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(data, &m)
}

func ingestStatus(dir string) (content.Status, error) {
	m, err := readIngest(dir)
	if err != nil {
		return content.Status{}, err
	}
	fi, err := os.Stat(filepath.Join(dir, "data"))
	if err != nil {
		return content.Status{}, err
	}
	return content.Status{Ref: m.Ref, Offset: fi.Size(), Total: m.Total, Expected: m.Expected, StartedAt: m.StartedAt, UpdatedAt: fi.ModTime()}, nil
}

func (s *Store) Status(_ context.Context, ref string) (content.Status, error) {
	st, err := ingestStatus(s.ingestDir(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return content.Status{}, fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	return st, err
}

// ListStatuses lists the ingests in progress that match any of the
// filters (on "ref").
func (s *Store) ListStatuses(_ context.Context, fs ...string) ([]content.Status, error) {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	entries, err := os.ReadDir(s.ingest)
	if err != nil {
		return nil, err
	}
	var out []content.Status
	for _, e := range entries {
		st, err := ingestStatus(filepath.Join(s.ingest, e.Name()))
		if err != nil {
			continue // one being made or removed
		}
		match := filter.Match(filters.AdapterFunc(func(fieldpath []string) (string, bool) {
			if len(fieldpath) == 1 && fieldpath[0] == "ref" {
				return st.Ref, true
			}
			return "", false
		}))
		if match {
			out = append(out, st)
		}
	}
	return out, nil
}

// Abort removes an ingest, unless a writer has it open.
func (s *Store) Abort(_ context.Context, ref string) error {
	if err := s.lock(ref); err != nil {
		return err
	}
	defer s.unlock(ref)
	dir := s.ingestDir(ref)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	return os.RemoveAll(dir)
}

func (s *Store) lock(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked[ref] {
		return fmt.Errorf("ingest %q is open in another writer: %w", ref, errdefs.ErrUnavailable)
	}
	s.locked[ref] = true
	return nil
}

func (s *Store) unlock(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.locked, ref)
}

// Writer opens the ingest ref, going on from what it holds if it exists.
// A blob that is stored already gives ErrAlreadyExists.
func (s *Store) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Ref == "" {
		return nil, fmt.Errorf("writer needs a ref: %w", errdefs.ErrInvalidArgument)
	}
	if wo.Desc.Digest != "" {
		if _, err := s.get(ctx, wo.Desc.Digest); err == nil {
			return nil, fmt.Errorf("content %s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
		}
	}
	if err := s.lock(wo.Ref); err != nil {
		return nil, err
	}
	w, err := s.openIngest(wo)
	if err != nil {
		s.unlock(wo.Ref)
		return nil, err
	}
	return w, nil
}

func (s *Store) openIngest(wo content.WriterOpts) (*writer, error) {
	dir := s.ingestDir(wo.Ref)
	m, err := readIngest(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		m = ingestMeta{Ref: wo.Ref, StartedAt: time.Now().UTC()}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("ingest %q: %w", wo.Ref, err)
	}
	if wo.Desc.Size > 0 {
		m.Total = wo.Desc.Size
	}
	if wo.Desc.Digest != "" {
		m.Expected = wo.Desc.Digest
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ingest.json"), data, 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// Resuming: the digest so far is that of what is there.
	h := digest.Canonical.Digester()
	n, err := io.Copy(h.Hash(), f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ingest %q: %w", wo.Ref, err)
	}
	updated := m.StartedAt
	if fi, err := f.Stat(); err == nil && n > 0 {
		updated = fi.ModTime()
	}
	return &writer{s: s, dir: dir, meta: m, f: f, h: h, offset: n, updated: updated}, nil
}

type writer struct {
	s       *Store
	dir     string
	meta    ingestMeta
	f       *os.File // nil once closed
	h       digest.Digester
	offset  int64
	updated time.Time // of the last write
}

func (w *writer) Write(p []byte) (int, error) {
	if w.f == nil {
		return 0, fmt.Errorf("ingest %q: writer closed: %w", w.meta.Ref, errdefs.ErrFailedPrecondition)
	}
	n, err := w.f.Write(p)
	w.h.Hash().Write(p[:n])
	w.offset += int64(n)
	w.updated = time.Now().UTC()
	return n, err
}

// Close keeps the ingest for a writer to resume.
func (w *writer) Close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	// The file's own mtime comes from the kernel's coarse clock and can
	// read earlier than the write; the writer's time is what a resumed
	// writer and Status report.
	if err == nil && w.offset > 0 {
		err = os.Chtimes(w.f.Name(), time.Time{}, w.updated)
	}
	w.f = nil
	w.s.unlock(w.meta.Ref)
	return err
}

func (w *writer) Digest() digest.Digest { return w.h.Digest() }

func (w *writer) Status() (content.Status, error) {
	return content.Status{Ref: w.meta.Ref, Offset: w.offset, Total: w.meta.Total, Expected: w.meta.Expected, StartedAt: w.meta.StartedAt, UpdatedAt: w.updated}, nil
}

// Truncate starts the ingest over; that is the only size it can go to.
func (w *writer) Truncate(size int64) error {
	if size != 0 {
		return fmt.Errorf("truncate ingest %q to %d: only 0 is supported: %w", w.meta.Ref, size, errdefs.ErrInvalidArgument)
	}
	if w.f == nil {
		return fmt.Errorf("ingest %q: writer closed: %w", w.meta.Ref, errdefs.ErrFailedPrecondition)
	}
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w.h, w.offset = digest.Canonical.Digester(), 0
	return nil
}

// Commit checks the data against size and expected, adds it to IPFS and
// records it. It closes the writer in every case.
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if w.f == nil {
		return fmt.Errorf("ingest %q: writer closed: %w", w.meta.Ref, errdefs.ErrFailedPrecondition)
	}
	defer w.Close()
	if err := w.f.Sync(); err != nil {
		return err
	}
	if size > 0 && size != w.offset {
		return fmt.Errorf("commit %q: %d bytes written, %d expected: %w", w.meta.Ref, w.offset, size, errdefs.ErrFailedPrecondition)
	}
	d := w.h.Digest()
	if expected != "" && expected != d {
		return fmt.Errorf("commit %q: content is %s, %s expected: %w", w.meta.Ref, d, expected, errdefs.ErrFailedPrecondition)
	}
	var info content.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	s := w.s
	if _, err := s.get(ctx, d); err == nil {
		os.RemoveAll(w.dir)
		return fmt.Errorf("content %s: %w", d, errdefs.ErrAlreadyExists)
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var c cid.Cid
	err := image.WithLease(ctx, s.node, func(image.Lease) error {
		var err error
		if c, err = s.node.Add(ctx, w.f); err != nil {
			return fmt.Errorf("commit %s: add to IPFS: %w", d, err)
		}
		if err := s.node.Hold(ctx, holdName(d), c); err != nil {
			return fmt.Errorf("commit %s: %w", d, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer os.RemoveAll(w.dir)
	if _, err := s.get(ctx, d); err == nil {
		// Another ingest of the same bytes committed meanwhile.
		return fmt.Errorf("content %s: %w", d, errdefs.ErrAlreadyExists)
	}
	if err := s.put(ctx, d, record{CID: c.String(), Size: w.offset, Created: now, Updated: now, Labels: info.Labels}); err != nil {
		return fmt.Errorf("commit %s: %w", d, err)
	}
	return nil
}
