package lazyfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"golang.org/x/sys/unix"
)

func TestSpansMerge(t *testing.T) {
	var s []span
	for _, add := range []span{{10, 20}, {30, 40}, {0, 5}, {20, 30}, {5, 10}} {
		s = addSpan(s, add)
	}
	if len(s) != 1 || s[0] != (span{0, 40}) {
		t.Fatalf("spans %v, want one of [0, 40)", s)
	}
	s = addSpan(addSpan(nil, span{0, 4}), span{8, 12})
	for _, c := range []struct {
		from, to int64
		want     bool
	}{{0, 4, true}, {1, 3, true}, {8, 12, true}, {3, 9, false}, {4, 8, false}, {12, 13, false}} {
		if got := covered(s, c.from, c.to); got != c.want {
			t.Errorf("covered(%v, %d, %d) = %v", s, c.from, c.to, got)
		}
	}
}

func TestFileCacheCompletesOutOfOrderAndEvicts(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenFileCache(dir, 250)
	if err != nil {
		t.Fatal(err)
	}
	c.MinSize = 1
	data := bytes.Repeat([]byte("0123456789"), 10)
	fill := func(key string) {
		t.Helper()
		w := c.writer(key, int64(len(data)))
		if w == nil {
			t.Fatal("no writer")
		}
		// Out of order, overlapping, and a read already had.
		for _, r := range []span{{50, 100}, {0, 30}, {20, 60}, {0, 10}} {
			done := w.write(data[r.from:r.to], r.from)
			if done != (r == span{20, 60}) {
				t.Fatalf("write %v: done %v", r, done)
			}
		}
	}
	fill("a")
	f, ok := c.open("a", int64(len(data)))
	if !ok {
		t.Fatal("complete copy not found")
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("copy holds %q", got)
	}
	if _, ok := c.open("a", 99); ok {
		t.Error("a copy of another size was taken")
	}
	// Make a the oldest use, then go over the limit: a goes.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "a"), old, old)
	fill("b")
	os.Chtimes(filepath.Join(dir, "b"), old.Add(time.Minute), old.Add(time.Minute))
	fill("c")
	if _, ok := c.open("a", 100); ok {
		t.Error("the least recently used copy was not evicted")
	}
	for _, k := range []string{"b", "c"} {
		if f, ok := c.open(k, 100); !ok {
			t.Errorf("copy %s evicted", k)
		} else {
			f.Close()
		}
	}
	if c.Size() != 200 {
		t.Errorf("cache size %d, want 200", c.Size())
	}
	// A copy left half-written is dropped at close, and never seen.
	w := c.writer("d", 100)
	w.write(data[:10], 0)
	c.Close()
	if _, ok := c.open("d", 100); ok {
		t.Error("a half-written copy was opened")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*"+partSuffix+"*")); len(m) != 0 {
		t.Errorf("half-written copies left: %v", m)
	}
}

// namedLayer is a memLayer that names its content, so that the file
// cache keeps its files.
type namedLayer struct {
	memLayer
	id string
}

func (l namedLayer) contentID() string { return l.id }

// bigLayer is a layer whose files hold their names repeated to the
// files' sizes.
type bigLayer struct{ namedLayer }

func (l bigLayer) ReadAt(_ context.Context, e *layerindex.Entry, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) && off+int64(n) < e.Size {
		p[n] = e.Name[(off+int64(n))%int64(len(e.Name))]
		n++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestMountServesFilesReadWholeFromTheFileCache(t *testing.T) {
	testenv.FUSE(t)
	const size = 3<<20 + 123
	big := layerindex.Entry{Name: "usr/lib/big", Type: "0"[0], Mode: 0o644, Size: size}
	half := layerindex.Entry{Name: "usr/lib/half", Type: "0"[0], Mode: 0o644, Size: size}
	layer := bigLayer{namedLayer{memLayer{dir("usr/"), dir("usr/lib/"), big, half}, "layer-1"}}
	want := func(name string) []byte {
		return bytes.Repeat([]byte(name), size/len(name)+1)[:size]
	}
	cache, err := OpenFileCache(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	mountOnce := func() (string, *Stats, func()) {
		dir, stats := t.TempDir(), &Stats{}
		srv, err := Mount(dir, Merge([]Layer{layer}), MountOptions{Name: "shoal:test", Stats: stats, Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		return dir, stats, func() {
			if err := srv.Unmount(); err != nil {
				t.Error(err)
			}
		}
	}

	dir, stats, unmount := mountOnce()
	if got, err := os.ReadFile(filepath.Join(dir, big.Name)); err != nil || !bytes.Equal(got, want(big.Name)) {
		t.Fatalf("read %s: %d bytes, %v", big.Name, len(got), err)
	}
	f, err := os.Open(filepath.Join(dir, half.Name))
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(make([]byte, 1<<20), 0)
	f.Close()
	unmount()
	if stats.CachedFiles.Load() != 1 || cache.Size() != size {
		t.Fatalf("%d files added to the cache, %d bytes in it; want the one read whole", stats.CachedFiles.Load(), cache.Size())
	}

	dir, stats, unmount = mountOnce()
	defer unmount()
	for _, e := range []layerindex.Entry{big, half} {
		if got, err := os.ReadFile(filepath.Join(dir, e.Name)); err != nil || !bytes.Equal(got, want(e.Name)) {
			t.Fatalf("read %s again: %d bytes, %v", e.Name, len(got), err)
		}
	}
	if stats.CacheOpens.Load() != 1 {
		t.Errorf("%d opens from the cache, want 1 (the file read whole before)", stats.CacheOpens.Load())
	}
	// Where the kernel passes reads through (6.9 and later), the mount
	// sees none of the cached file's.
	if passthroughKernel(t) && stats.ReadBytes.Load() > size+(1<<20) {
		t.Errorf("the mount served %d bytes; the cached file's %d should have bypassed it", stats.ReadBytes.Load(), size)
	}
}

// passthroughKernel reports whether the running kernel passes FUSE reads
// through to a backing file (Linux 6.9 and later).
func passthroughKernel(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(unix.ByteSliceToString(u.Release[:]), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, _ := strconv.Atoi(parts[0])
	minor, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major > 6 || major == 6 && minor >= 9
}

// TestOverlayReadsCachedFilesThroughThePassthrough: the snapshotter
// stacks overlayfs on a layer's mount; a file served from its cached copy
// (passed through by the kernel) reads and maps right through it.
func TestOverlayReadsCachedFilesThroughThePassthrough(t *testing.T) {
	testenv.FUSE(t)
	const size = 3 << 20
	big := layerindex.Entry{Name: "usr/lib/big", Type: "0"[0], Mode: 0o644, Size: size}
	layer := bigLayer{namedLayer{memLayer{dir("usr/"), dir("usr/lib/"), big}, "layer-1"}}
	want := bytes.Repeat([]byte(big.Name), size/len(big.Name)+1)[:size]
	cache, err := OpenFileCache(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	mnt, stats := t.TempDir(), &Stats{}
	srv, err := Mount(mnt, Merge([]Layer{layer}), MountOptions{Name: "shoal:test", Stats: stats, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	if got, err := os.ReadFile(filepath.Join(mnt, big.Name)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	served := stats.ReadBytes.Load()

	upper, work, merged := t.TempDir(), t.TempDir(), t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+mnt+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	if got, err := os.ReadFile(filepath.Join(merged, big.Name)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read through overlayfs: %d bytes, %v", len(got), err)
	}
	f, err := os.Open(filepath.Join(merged, big.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("mmap through overlayfs: %v", err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, want) {
		t.Fatal("the mapped file differs")
	}
	if stats.CacheOpens.Load() == 0 {
		t.Error("overlayfs's opens did not come from the cache")
	}
	if passthroughKernel(t) && stats.ReadBytes.Load() != served {
		t.Errorf("the mount served %d more bytes; the kernel should have read the copy", stats.ReadBytes.Load()-served)
	}
}
