package lazyfs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"golang.org/x/sync/errgroup"
)

// AnnotationPrefetch on an image manifest is "ipfs://CID" of a prefetch
// list: the files (and ranges) a workload read, to fetch first at mount.
const AnnotationPrefetch = "io.shoal.prefetch"

// PrefetchList is what `shoal mount --record` writes: the files a
// workload read, in the order it first read them, with the byte ranges.
type PrefetchList struct {
	Files []PrefetchFile `json:"files"`
}

// PrefetchFile is one file of a prefetch list.
type PrefetchFile struct {
	Path   string     `json:"path"`
	Ranges [][2]int64 `json:"ranges"` // [offset, length]
}

// MaxPrefetchList bounds a prefetch list read whole.
const MaxPrefetchList = 16 << 20

// ParsePrefetchList reads a prefetch list and checks it.
func ParsePrefetchList(data []byte) (*PrefetchList, error) {
	var l PrefetchList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("prefetch list: %w", err)
	}
	for _, f := range l.Files {
		if _, ok := cleanName(f.Path); !ok || f.Path == "" {
			return nil, fmt.Errorf("prefetch list: path %q", f.Path)
		}
		for _, r := range f.Ranges {
			if r[0] < 0 || r[1] <= 0 || r[0] > 1<<50 || r[1] > 1<<50 {
				return nil, fmt.Errorf("prefetch list: %s: range %v", f.Path, r)
			}
		}
	}
	return &l, nil
}

// Recorder notes the reads of a mount, to write a prefetch list.
type Recorder struct {
	mu     sync.Mutex
	order  []string
	ranges map[string][][2]int64
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{ranges: map[string][][2]int64{}} }

func (r *Recorder) note(path string, off, n int64) {
	if r == nil || n <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rs, seen := r.ranges[path]
	if !seen {
		r.order = append(r.order, path)
	}
	// Reads are mostly sequential: extend the last range when they touch.
	if k := len(rs); k > 0 && rs[k-1][0]+rs[k-1][1] >= off && rs[k-1][0] <= off {
		rs[k-1][1] = max(rs[k-1][1], off+n-rs[k-1][0])
	} else {
		rs = append(rs, [2]int64{off, n})
	}
	r.ranges[path] = rs
}

// List returns what was read, files in first-read order, each file's
// ranges sorted and merged.
func (r *Recorder) List() *PrefetchList {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := &PrefetchList{Files: []PrefetchFile{}}
	for _, p := range r.order {
		rs := append([][2]int64{}, r.ranges[p]...)
		sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
		var merged [][2]int64
		for _, x := range rs {
			if k := len(merged); k > 0 && merged[k-1][0]+merged[k-1][1] >= x[0] {
				merged[k-1][1] = max(merged[k-1][1], x[0]+x[1]-merged[k-1][0])
				continue
			}
			merged = append(merged, x)
		}
		l.Files = append(l.Files, PrefetchFile{Path: p, Ranges: merged})
	}
	return l
}

// Prefetch fetches the spans holding the listed ranges into the store,
// parallel at a time, so that the reads that follow are local. It returns
// how many spans and bytes it fetched.
func (im *Image) Prefetch(ctx context.Context, l *PrefetchList, parallel int) (spans int, bytes int64, err error) {
	type key struct {
		layer *indexedLayer
		id    int
	}
	seen := map[key]bool{}
	var todo []func() error
	var mu sync.Mutex
	for _, f := range l.Files {
		p, ok := cleanName(f.Path)
		if !ok {
			continue
		}
		n := im.Tree.lookup(p)
		if n == nil || !n.entry.IsReg() {
			continue
		}
		il, ok := n.layer.(*indexedLayer)
		if !ok {
			continue
		}
		for _, r := range f.Ranges {
			for _, s := range il.ix.Spans(&n.entry, r[0], r[1]) {
				k := key{il, s.ID}
				if seen[k] {
					continue
				}
				seen[k] = true
				todo = append(todo, func() error {
					if err := il.fetch(ctx, s); err != nil {
						return err
					}
					mu.Lock()
					spans++
					bytes += s.End - s.Start
					mu.Unlock()
					return nil
				})
			}
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(parallel, 1))
	for _, f := range todo {
		g.Go(f)
	}
	err = g.Wait()
	return spans, bytes, err
}

// FetchAll fetches every layer whole into the store, in the background of
// a mount, at most rate bytes a second, and stops when ctx ends.
func (im *Image) FetchAll(ctx context.Context, rate int64) error {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for _, l := range im.layers {
		for off := int64(0); ; off += chunk {
			start := time.Now()
			n, err := l.store.ReadBlobAt(ctx, l.blob, buf, off)
			if err == io.EOF || (err == nil && n < chunk) {
				break
			}
			if err != nil {
				return err
			}
			if rate > 0 {
				wait := time.Duration(float64(n)/float64(rate)*float64(time.Second)) - time.Since(start)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(max(wait, 0)):
				}
			}
		}
	}
	return nil
}

// fetch brings span s of the layer's blob into the store.
func (l *indexedLayer) fetch(ctx context.Context, s layerindex.Span) error {
	ctx, cancel := context.WithTimeout(ctx, l.readTimeout)
	defer cancel()
	buf := make([]byte, s.End-s.Start)
	if _, err := l.store.ReadBlobAt(ctx, l.blob, buf, s.Start); err != nil && err != io.EOF {
		return fmt.Errorf("prefetch span %d of %s: %w", s.ID, l.blob, err)
	}
	return nil
}

// PrefetchListCID returns the CID of the image's prefetch list, if any.
func (im *Image) PrefetchListCID() (cid.Cid, bool) {
	ref := im.annotations[AnnotationPrefetch]
	c, err := cid.Decode(strings.TrimPrefix(ref, "ipfs://"))
	return c, err == nil
}

// ReadPrefetchList reads and parses the prefetch list c from store.
func ReadPrefetchList(ctx context.Context, store Store, c cid.Cid) (*PrefetchList, error) {
	rc, err := store.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxPrefetchList+1))
	if err != nil {
		return nil, err
	}
	return ParsePrefetchList(data)
}

// FetchAhead is what a mount does beside serving reads: the spans of the
// image's prefetch list, if it has one, then, at rate bytes a second
// (0: not), the rest of the image. It says what it did, and what failed,
// through report, and stops when ctx ends.
func (im *Image) FetchAhead(ctx context.Context, store Store, rate int64, report func(format string, args ...any)) {
	if c, ok := im.PrefetchListCID(); ok {
		start := time.Now()
		list, err := ReadPrefetchList(ctx, store, c)
		if err == nil {
			var spans int
			var n int64
			spans, n, err = im.Prefetch(ctx, list, 8)
			if err == nil {
				report("prefetched %d files: %d spans, %.1f MiB in %s", len(list.Files), spans, float64(n)/(1<<20), time.Since(start).Round(time.Millisecond))
			}
		}
		if err != nil && ctx.Err() == nil {
			report("shoal: prefetch: %v", err)
		}
	}
	if rate > 0 {
		if err := im.FetchAll(ctx, rate); err != nil && ctx.Err() == nil {
			report("shoal: background fetch: %v", err)
		} else if err == nil {
			report("the whole image is stored here now")
		}
	}
}
