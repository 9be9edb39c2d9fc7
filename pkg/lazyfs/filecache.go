package lazyfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FileCache keeps whole files of mounted layers on local disk, as plain
// files, once a mount has read every byte of them. A later open of such a
// file (by any mount of the same layer, after a restart too) is then
// served from the cached copy: by the kernel itself where FUSE passthrough
// is available (root, Linux 6.9 or later), else by a plain read of the
// copy. Either way no span is inflated again, so reading a cached file
// goes at about the speed of the local disk.
//
// Only files of at least MinSize bytes are kept: smaller ones are read
// in one span and stay in the page cache. The copies together stay under
// a size limit, the least recently opened going first. Several processes
// may share the directory: a copy appears under its name only once
// complete (a rename), and one removed while open stays readable.
type FileCache struct {
	dir     string
	limit   int64
	MinSize int64

	mu      sync.Mutex
	size    int64 // bytes of complete copies
	writers map[*cacheWriter]bool
}

// DefaultCacheMinSize is the smallest file a FileCache keeps.
const DefaultCacheMinSize = 1 << 20

// partSuffix marks a copy being written; staleParts is how old one must
// be before OpenFileCache takes it for a leftover of a killed process.
const (
	partSuffix = ".part"
	staleParts = 24 * time.Hour
)

// OpenFileCache opens (creating it) the cache in dir, holding at most
// limit bytes of copies.
func OpenFileCache(dir string, limit int64) (*FileCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	c := &FileCache{dir: dir, limit: limit, MinSize: DefaultCacheMinSize, writers: map[*cacheWriter]bool{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if strings.Contains(e.Name(), partSuffix) {
			if time.Since(fi.ModTime()) > staleParts {
				os.Remove(filepath.Join(dir, e.Name()))
			}
			continue
		}
		c.size += fi.Size()
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

// Size is the bytes of complete copies in the cache.
func (c *FileCache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// cacheKey names the copy of file name of layer (its content's CID),
// size bytes long.
func cacheKey(layer, name string, size int64) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", layer, name, size))
	return hex.EncodeToString(h[:])
}

// open returns the complete copy under key, if there is one, and marks
// it used.
func (c *FileCache) open(key string, size int64) (*os.File, bool) {
	p := filepath.Join(c.dir, key)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		f.Close()
		return nil, false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // the eviction order
	return f, true
}

// maxWriters bounds the copies being written at once, each an open file.
const maxWriters = 256

// writer starts a copy of a file of size bytes under key; nil when the
// cache cannot take one now.
func (c *FileCache) writer(key string, size int64) *cacheWriter {
	if size < c.MinSize || size > c.limit {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.writers) >= maxWriters {
		return nil
	}
	f, err := os.CreateTemp(c.dir, key+partSuffix+"*")
	if err != nil {
		return nil
	}
	// Allocated whole now, so that the copy lies in few extents however
	// out of order the reads fill it (reading it back goes at the
	// disk's speed); a filesystem without fallocate gets a sparse file.
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil
	}
	w := &cacheWriter{c: c, key: key, size: size, f: f}
	c.writers[w] = true
	return w
}

// Close drops the copies still being written; complete ones stay.
func (c *FileCache) Close() {
	c.mu.Lock()
	ws := slices.Collect(maps.Keys(c.writers))
	c.mu.Unlock()
	for _, w := range ws {
		w.abandon()
	}
}

// added counts a new complete copy and evicts to stay under the limit.
func (c *FileCache) added(w *cacheWriter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.writers, w)
	c.size += w.size
	c.evict()
}

func (c *FileCache) forget(w *cacheWriter) {
	c.mu.Lock()
	delete(c.writers, w)
	c.mu.Unlock()
}

// evict removes the least recently opened copies until the cache holds
// at most 90% of its limit. c.mu is held.
func (c *FileCache) evict() {
	if c.size <= c.limit {
		return
	}
	type copyInfo struct {
		name string
		size int64
		used time.Time
	}
	var copies []copyInfo
	total := int64(0)
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), partSuffix) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			copies = append(copies, copyInfo{e.Name(), fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
	}
	slices.SortFunc(copies, func(a, b copyInfo) int { return a.used.Compare(b.used) })
	for _, ci := range copies {
		if total <= c.limit*9/10 {
			break
		}
		if err := os.Remove(filepath.Join(c.dir, ci.name)); err == nil || errors.Is(err, fs.ErrNotExist) {
			total -= ci.size
		}
	}
	c.size = total
}

// cacheWriter fills a copy of one file from the reads a mount serves, in
// whatever order they come; once every byte is in, the copy takes its
// name and later opens use it.
type cacheWriter struct {
	c    *FileCache
	key  string
	size int64

	mu   sync.Mutex
	f    *os.File // nil once complete or abandoned
	have []span   // the byte ranges written, sorted and disjoint
}

type span struct{ from, to int64 }

// write stores p, read at off, into the copy; it reports true when that
// completed it.
func (w *cacheWriter) write(p []byte, off int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil || len(p) == 0 || off < 0 || off+int64(len(p)) > w.size {
		return false
	}
	if covered(w.have, off, off+int64(len(p))) {
		return false
	}
	if _, err := w.f.WriteAt(p, off); err != nil {
		w.dropLocked()
		return false
	}
	w.have = addSpan(w.have, span{off, off + int64(len(p))})
	if len(w.have) != 1 || w.have[0] != (span{0, w.size}) {
		return false
	}
	name := w.f.Name()
	err := w.f.Close()
	w.f = nil
	if err == nil {
		err = os.Rename(name, filepath.Join(w.c.dir, w.key))
	}
	if err != nil {
		os.Remove(name)
		w.c.forget(w)
		return false
	}
	w.c.added(w)
	return true
}

// abandon drops an unfinished copy.
func (w *cacheWriter) abandon() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.dropLocked()
	}
}

func (w *cacheWriter) dropLocked() {
	name := w.f.Name()
	w.f.Close()
	w.f = nil
	os.Remove(name)
	w.c.forget(w)
}

// covered reports whether [from, to) lies within one of spans.
func covered(spans []span, from, to int64) bool {
	i, _ := slices.BinarySearchFunc(spans, from, func(s span, x int64) int {
		switch {
		case s.to < x:
			return -1
		case s.from > x:
			return 1
		}
		return 0
	})
	return i < len(spans) && spans[i].from <= from && spans[i].to >= to
}

// addSpan merges s into sorted, disjoint spans.
func addSpan(spans []span, s span) []span {
	out := spans[:0:0]
	for _, t := range spans {
		switch {
		case t.to < s.from:
			out = append(out, t)
		case t.from > s.to:
			if s.to >= 0 {
				out = append(out, s)
				s = span{-1, -1}
			}
			out = append(out, t)
		default: // overlapping or touching: merge
			s = span{min(s.from, t.from), max(s.to, t.to)}
		}
	}
	if s.to >= 0 {
		out = append(out, s)
	}
	return out
}
