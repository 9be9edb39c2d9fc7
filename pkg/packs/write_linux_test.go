package packs

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	blocks "github.com/ipfs/go-block-format"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file at path in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	// x/sys has no wrapper for mincore(2).
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// directWriter starts a pack that may be written directly, in a store
// that has timed the cache and the disk at the given speeds.
func directWriter(t *testing.T, cached, direct float64) *Writer {
	t.Helper()
	s, _, _ := newStore(t)
	s.ways.cached, s.ways.direct = cached, direct
	w, err := s.NewWriter(DirectWhenFaster())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if w.direct == nil {
		testenv.Need(t, "O_DIRECT on the test's file system", errors.New("open refused it"))
	}
	return w
}

func TestDirectWritesGoAroundThePageCache(t *testing.T) {
	ctx := context.Background()
	leaves := mixedLeaves(t)[1:9] // 2 MiB in 256 KiB leaves
	for _, gap := range []int{0, 36} {
		w := directWriter(t, 1, 2)
		if err := w.Add(ctx, inOneBuffer(t, leaves, gap)); err != nil {
			t.Fatal(err)
		}
		if n := residentPages(t, w.f.Name()); n != 0 {
			t.Fatalf("leaves %d bytes apart: %d pages of a pack written directly are in the page cache", gap, n)
		}
	}

	// Through the cache when the cache is faster.
	w := directWriter(t, 2, 1)
	if err := w.Add(ctx, inOneBuffer(t, leaves, 0)); err != nil {
		t.Fatal(err)
	}
	if n := residentPages(t, w.f.Name()); n != (2<<20)/os.Getpagesize() {
		t.Fatalf("%d pages of a pack written through the cache are in it", n)
	}
}

// A direct write the kernel refuses (here: memory off the page) goes
// through the cache, and so does every write after it.
func TestRefusedDirectWriteFallsBackToTheCache(t *testing.T) {
	w := directWriter(t, 0, 0)
	buf := make([]byte, 2*directAlign+1)
	for i := range buf {
		buf[i] = byte(i)
	}
	n, err := w.writeDirect([][]byte{buf[1:]}, 0)
	if err != nil || n != 0 {
		t.Fatalf("writeDirect: %d bytes direct, %v; want the cache to take them", n, err)
	}
	if w.direct != nil {
		t.Fatal("the writer still writes directly after a refusal")
	}
	got := make([]byte, 2*directAlign)
	if _, err := w.f.ReadAt(got, 0); err != nil || string(got) != string(buf[1:]) {
		t.Fatalf("the refused write did not reach the pack: %v", err)
	}
}

// A pack that fills its disk fails the Add with ENOSPC, written either way,
// and the leaves it could not write are not indexed.
func TestFullDiskFailsTheAdd(t *testing.T) {
	testenv.Root(t)
	for _, tc := range []struct {
		name           string
		cached, direct float64
	}{{"direct", 1, 2}, {"cached", 2, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
				testenv.Need(t, "a tmpfs mount", err)
			}
			t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
			s, _ := newStoreIn(t, dir)
			s.ways.cached, s.ways.direct = tc.cached, tc.direct
			w, err := s.NewWriter(DirectWhenFaster())
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			t.Logf("O_DIRECT on tmpfs: %v", w.direct != nil)
			leaves := inOneBuffer(t, mixedLeaves(t)[1:9], 0) // 2 MiB
			err = w.Add(context.Background(), leaves)
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("Add onto a full disk: %v, want ENOSPC", err)
			}
			if has, _ := s.Has(context.Background(), leaves[len(leaves)-1].Cid()); has {
				t.Fatal("a leaf that was not written is indexed")
			}
		})
	}
}

// flushLeaves are distinct 256 KiB leaves, n bytes in all.
func flushLeaves(t *testing.T, n int) []blocks.Block {
	t.Helper()
	buf := make([]byte, 256<<10)
	var out []blocks.Block
	for i := range n / len(buf) {
		binary.BigEndian.PutUint64(buf, uint64(i))
		out = append(out, rawBlock(t, string(buf)))
	}
	return out
}

// A pack is flushed to the disk as it is written, by either writer and
// whichever way, so that a pin waits for its tail only: most of it has
// reached the disk, its cache flushed, when the writer closes, before any
// sync.
func TestPackIsFlushedAsItIsWritten(t *testing.T) {
	for _, tc := range []struct {
		name           string
		cached, direct float64
	}{{"cached", 2, 1}, {"direct", 1, 2}, {"placed", 0, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, disk := testenv.ScratchFS(t)
			s, _ := newStoreIn(t, filepath.Join(dir, "packs"))
			s.ways.cached, s.ways.direct = tc.cached, tc.direct
			leaves := inOneBuffer(t, flushLeaves(t, 3*flushEvery), 0)
			written, flushes := disk.Written(), disk.Flushes()
			if err := writePack(t, s, leaves, tc.name == "placed"); err != nil {
				t.Fatal(err)
			}
			if got := disk.Written() - written; got < flushEvery {
				t.Errorf("%d bytes of a %d-byte pack reached the disk before a sync, want %d or more", got, 3*flushEvery, flushEvery)
			}
			if disk.Flushes() == flushes {
				t.Error("the disk's cache was not flushed while the pack was written")
			}
		})
	}
}

// writePack writes leaves into a new pack of s, in order with a Writer,
// or last to first with a PlacedWriter, and closes it.
func writePack(t *testing.T, s *Store, leaves []blocks.Block, placed bool) error {
	t.Helper()
	ctx := context.Background()
	if !placed {
		w, err := s.NewWriter(DirectWhenFaster())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(leaves) && err == nil; i += 4 {
			err = w.Add(ctx, leaves[i:i+4])
		}
		return errors.Join(err, w.Close())
	}
	var places []Place
	var off int64
	for _, b := range leaves {
		places = append(places, Place{Hash: b.Cid().Hash(), Offset: off, Length: int64(len(b.RawData()))})
		off += int64(len(b.RawData()))
	}
	w, err := s.NewPlacedWriter(places)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(leaves) - 1; i >= 0 && err == nil; i-- {
		_, err = w.Put(ctx, leaves[i])
	}
	return errors.Join(err, w.Close())
}

// A flush that fails fails the writer, either, and the store's next sync:
// the kernel would not tell a later sync of the pack.
func TestFailedFlushFailsTheWriterAndTheSync(t *testing.T) {
	lost := errors.New("injected write-back error")
	defer func(f func(*os.File) error) { dataSync = f }(dataSync)
	dataSync = func(*os.File) error { return lost }
	for _, placed := range []bool{false, true} {
		s, _, _ := newStore(t)
		if err := writePack(t, s, flushLeaves(t, 2*flushEvery), placed); !errors.Is(err, lost) {
			t.Fatalf("writing a pack whose flush failed (placed %v): %v, want %v", placed, err, lost)
		}
		if err := s.Sync(); !errors.Is(err, lost) {
			t.Fatalf("the store's sync after a failed flush (placed %v): %v, want %v", placed, err, lost)
		}
	}
}
