package packs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-base32"
	mh "github.com/multiformats/go-multihash"
)

func block(t *testing.T, codec uint64, data string) blocks.Block {
	t.Helper()
	c, err := cid.V1Builder{Codec: codec, MhType: mh.SHA2_256}.Sum([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid([]byte(data), c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawBlock(t *testing.T, data string) blocks.Block { return block(t, cid.Raw, data) }
func pbBlock(t *testing.T, data string) blocks.Block  { return block(t, cid.DagProtobuf, data) }

func newStore(t *testing.T) (*Store, blockstore.Blockstore, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "packs")
	s, loose := newStoreIn(t, dir)
	return s, loose, dir
}

// newStoreIn is newStore keeping its packs in dir.
func newStoreIn(t *testing.T, dir string) (*Store, blockstore.Blockstore) {
	t.Helper()
	meta := dssync.MutexWrap(ds.NewMapDatastore())
	loose := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	s, err := New(loose, meta, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return s, loose
}

// blobFile returns the pack s records as holding root whole, its bytes,
// and the size recorded.
func blobFile(t *testing.T, s *Store, root cid.Cid) (string, []byte, int64) {
	t.Helper()
	path, size, ok, err := s.BlobFile(context.Background(), root)
	if err != nil || !ok {
		t.Fatalf("BlobFile: ok %v, err %v", ok, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, got, size
}

func keys(t *testing.T, s *Store) []string {
	t.Helper()
	ch, err := s.AllKeysChan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for c := range ch {
		out = append(out, string(c.Hash()))
	}
	slices.Sort(out)
	return out
}

func TestPackHoldsTheBlobInFileOrder(t *testing.T) {
	ctx := context.Background()
	s, loose, _ := newStore(t)
	a, b, inner := rawBlock(t, "first "), rawBlock(t, "second "), pbBlock(t, "inner node")
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	// a repeats, as a file of zeros repeats its chunk.
	if err := w.Add(ctx, []blocks.Block{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, []blocks.Block{a, inner}); err != nil {
		t.Fatal(err)
	}
	root := inner.Cid()
	if err := w.Finish(ctx, root); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	path, got, size := blobFile(t, s, root)
	if want := "first second first "; string(got) != want || size != int64(len(want)) {
		t.Fatalf("pack holds %q (size %d), want %q", got, size, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("pack is writable: %v", fi.Mode())
	}
	// Inner nodes stay loose; leaves are only in the pack.
	if has, _ := loose.Has(ctx, inner.Cid()); !has {
		t.Error("inner node not in the loose store")
	}
	if has, _ := loose.Has(ctx, a.Cid()); has {
		t.Error("leaf written to the loose store as well")
	}
	for _, blk := range []blocks.Block{a, b, inner} {
		got, err := s.Get(ctx, blk.Cid())
		if err != nil {
			t.Fatalf("Get %s: %v", blk.Cid(), err)
		}
		if !bytes.Equal(got.RawData(), blk.RawData()) {
			t.Fatalf("Get %s: %q, want %q", blk.Cid(), got.RawData(), blk.RawData())
		}
		if n, err := s.GetSize(ctx, blk.Cid()); err != nil || n != len(blk.RawData()) {
			t.Fatalf("GetSize %s: %d, %v", blk.Cid(), n, err)
		}
	}
	// A leaf opens where its pack holds it, one after another from the
	// pack kept open; an inner node is in no pack.
	leaves := s.Leaves()
	for _, blk := range []blocks.Block{a, b, a} {
		leaf, ok, err := leaves.Open(ctx, blk.Cid())
		if err != nil || !ok {
			t.Fatalf("Leaves.Open %s: ok %v, err %v", blk.Cid(), ok, err)
		}
		got, err := io.ReadAll(leaf)
		if err != nil || !bytes.Equal(got, blk.RawData()) {
			t.Fatalf("Leaves.Open %s reads %q (%v), want %q", blk.Cid(), got, err, blk.RawData())
		}
	}
	if _, ok, err := leaves.Open(ctx, inner.Cid()); ok || err != nil {
		t.Errorf("Leaves.Open of a loose block: ok %v, err %v; want not in a pack", ok, err)
	}
	if err := leaves.Close(); err != nil {
		t.Fatal(err)
	}
	// The store is keyed by multihash: the leaf under another codec is
	// the same block.
	other := cid.NewCidV1(cid.DagProtobuf, a.Cid().Hash())
	if has, err := s.Has(ctx, other); err != nil || !has {
		t.Fatalf("Has under another codec: %v, %v", has, err)
	}
	want := []string{string(a.Cid().Hash()), string(b.Cid().Hash()), string(inner.Cid().Hash())}
	slices.Sort(want)
	if got := keys(t, s); !slices.Equal(got, want) {
		t.Fatalf("AllKeysChan lists %d keys, want %d", len(got), len(want))
	}
}

func TestSweepRemovesPacksWithoutLeaves(t *testing.T) {
	ctx := context.Background()
	s, _, dir := newStore(t)
	add := func(bs ...blocks.Block) string {
		w, err := s.NewWriter()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Add(ctx, bs); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(ctx, bs[0].Cid()); err != nil {
			t.Fatal(err)
		}
		path, _, _, _ := s.BlobFile(ctx, bs[0].Cid())
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a, b, c := rawBlock(t, "a"), rawBlock(t, "b"), rawBlock(t, "c")
	p1 := add(a, b)
	p2 := add(c)
	// A pack being written is spared even though nothing names it yet.
	open, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Add(ctx, []blocks.Block{pbBlock(t, "loose only")}); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteBlock(ctx, a.Cid()); err != nil {
		t.Fatal(err)
	}
	if has, _ := s.Has(ctx, a.Cid()); has {
		t.Fatal("deleted leaf still there")
	}
	if err := s.DeleteBlock(ctx, c.Cid()); err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); err != nil {
		t.Fatalf("pack with a leaf left was removed: %v", err)
	}
	if _, err := os.Stat(p2); !os.IsNotExist(err) {
		t.Fatalf("pack without leaves kept: %v", err)
	}
	if _, _, ok, _ := s.BlobFile(ctx, c.Cid()); ok {
		t.Fatal("blob record of a removed pack kept")
	}
	if _, err := s.Get(ctx, b.Cid()); err != nil {
		t.Fatalf("leaf of a kept pack: %v", err)
	}
	if _, err := s.Get(ctx, a.Cid()); !ipld.IsNotFound(err) {
		t.Fatalf("Get of a deleted leaf: %v, want not found", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d files in the pack directory, want the kept pack and the open one", len(entries))
	}
	// Closed without a leaf, the open pack goes.
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the pack directory, want 1", len(entries))
	}
}

func TestLocationEncoding(t *testing.T) {
	l := location{pack: "0123456789abcdef01234567", off: 1 << 40, length: 262144}
	got, err := decodeLocation(l.encode())
	if err != nil || got != l {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0x05, 'a'}, {0x01, 'a'}, {0x01, 'a', 0x80}} {
		if _, err := decodeLocation(bad); err == nil {
			t.Errorf("decodeLocation(%x) accepted", bad)
		}
	}
}

func TestPlacedWriterFillsTheBlobInAnyOrder(t *testing.T) {
	ctx := context.Background()
	s, loose, _ := newStore(t)
	a, b := rawBlock(t, "aaaa"), rawBlock(t, "bb")
	// The blob is a, b, a: a repeats.
	places := []Place{
		{Hash: a.Cid().Hash(), Offset: 0, Length: 4},
		{Hash: b.Cid().Hash(), Offset: 4, Length: 2},
		{Hash: a.Cid().Hash(), Offset: 6, Length: 4},
	}
	root := pbBlock(t, "root").Cid()

	w, err := s.NewPlacedWriter(places)
	if err != nil {
		t.Fatal(err)
	}
	if placed, err := w.Put(ctx, b); err != nil || !placed {
		t.Fatalf("Put b: %v, %v", placed, err)
	}
	// Not yet whole: Finish records nothing.
	if err := w.Finish(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.BlobFile(ctx, root); ok {
		t.Fatal("a pack missing a leaf recorded as the whole blob")
	}
	if placed, _ := w.Put(ctx, rawBlock(t, "stranger")); placed {
		t.Fatal("a block that is not a leaf of the blob was placed")
	}
	if placed, err := w.Put(ctx, a); err != nil || !placed {
		t.Fatalf("Put a: %v, %v", placed, err)
	}
	if err := w.Finish(ctx, root); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path, size, ok, err := s.BlobFile(ctx, root)
	if err != nil || !ok || size != 10 {
		t.Fatalf("BlobFile: ok %v, size %d, err %v", ok, size, err)
	}
	if got, _ := os.ReadFile(path); string(got) != "aaaabbaaaa" {
		t.Fatalf("pack holds %q", got)
	}
	if got, err := s.Get(ctx, b.Cid()); err != nil || string(got.RawData()) != "bb" {
		t.Fatalf("Get b: %v", err)
	}
	if has, _ := loose.Has(ctx, a.Cid()); has {
		t.Error("a placed leaf went to the loose store too")
	}
}

// TestSweepMovesTheLastLeavesOfAMostlyCollectedPack: a member of a group
// keeping a third of an image it once held whole gets the other two
// thirds' space back.
func TestSweepMovesTheLastLeavesOfAMostlyCollectedPack(t *testing.T) {
	ctx := context.Background()
	s, loose, _ := newStore(t)
	leaves := []blocks.Block{rawBlock(t, "one."), rawBlock(t, "two."), rawBlock(t, "six."), rawBlock(t, "ten.")}
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, leaves); err != nil {
		t.Fatal(err)
	}
	root := pbBlock(t, "root").Cid()
	if err := w.Finish(ctx, root); err != nil {
		t.Fatal(err)
	}
	path, _, _, _ := s.BlobFile(ctx, root)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, b := range leaves[1:] {
		if err := s.DeleteBlock(ctx, b.Cid()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a pack three quarters collected is still there (%v)", err)
	}
	if _, _, ok, _ := s.BlobFile(ctx, root); ok {
		t.Fatal("the blob record outlived its pack")
	}
	if has, _ := loose.Has(ctx, leaves[0].Cid()); !has {
		t.Fatal("the leaf left was not moved to the loose store")
	}
	if got, err := s.Get(ctx, leaves[0].Cid()); err != nil || string(got.RawData()) != "one." {
		t.Fatalf("Get of the moved leaf: %v", err)
	}
	if got := keys(t, s); len(got) != 1 {
		t.Fatalf("the store lists %d blocks, want 1", len(got))
	}
}

// FuzzDecodeLocation: an index entry read back from disk, whatever it
// holds, decodes or fails; what decodes encodes back to itself.
func FuzzDecodeLocation(f *testing.F) {
	f.Add(location{pack: "0123456789abcdef01234567", off: 262144, length: 262144}.encode())
	f.Add([]byte{0x01, 'a', 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLocation(b)
		if err != nil {
			return
		}
		if l.off < 0 || l.length < 0 {
			t.Fatalf("negative location %+v", l)
		}
		again, err := decodeLocation(l.encode())
		if err != nil || again != l {
			t.Fatalf("%+v encodes to what decodes as %+v (%v)", l, again, err)
		}
	})
}

// TestEmptyLeafStaysReadable: the empty blob is one empty raw leaf; its
// pack would be empty and removed, so the leaf is kept loose.
func TestEmptyLeafStaysReadable(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t)
	empty := rawBlock(t, "")
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, []blocks.Block{empty}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(ctx, empty.Cid()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, empty.Cid()); err != nil || len(got.RawData()) != 0 {
		t.Fatalf("Get of the empty leaf: %v", err)
	}
	if _, _, ok, _ := s.BlobFile(ctx, empty.Cid()); ok {
		t.Fatal("a removed empty pack is offered as the blob's file")
	}
}

// TestCorruptOrCutLeavesAreNeverHandedOut: a packed leaf whose bytes
// changed, one past the end of a pack a crash cut short, and a loose block
// that changed are each found by Check and read as missing by Get, which
// drops them and says so.
func TestCorruptOrCutLeavesAreNeverHandedOut(t *testing.T) {
	ctx := context.Background()
	meta := dssync.MutexWrap(ds.NewMapDatastore())
	looseData := dssync.MutexWrap(ds.NewMapDatastore())
	loose := blockstore.NewBlockstore(looseData, blockstore.NoPrefix())
	var dropped []cid.Cid
	s, err := New(loose, meta, filepath.Join(t.TempDir(), "packs"), false,
		OnCorrupt(func(c cid.Cid, _ error) { dropped = append(dropped, c) }))
	if err != nil {
		t.Fatal(err)
	}
	changed, cut, inner := rawBlock(t, "a leaf that changes"), rawBlock(t, "a leaf past the end"), pbBlock(t, "an inner node")
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, []blocks.Block{changed, cut, inner}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	l, _, _ := s.locate(ctx, changed.Cid())
	p := s.path(l.pack)
	os.Chmod(p, 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("A"), 0)
	f.Truncate(int64(len(changed.RawData())) + 3)
	f.Close()
	key := ds.NewKey(base32.RawStdEncoding.EncodeToString(inner.Cid().Hash()))
	looseData.Put(ctx, key, []byte("not the inner node"))

	for _, b := range []blocks.Block{changed, cut, inner} {
		if err := s.Check(ctx, b.Cid()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Check %q: %v, want ErrCorrupt", b.RawData(), err)
		}
		got, err := s.Get(ctx, b.Cid())
		if !ipld.IsNotFound(err) {
			t.Errorf("Get %q: %v (%v), want not found", b.RawData(), got, err)
		}
		if has, _ := s.Has(ctx, b.Cid()); has {
			t.Errorf("%q is still stored", b.RawData())
		}
	}
	if len(dropped) != 3 {
		t.Fatalf("%d drops told, want 3", len(dropped))
	}
}

// Sync makes durable the packs written since the last, by either writer,
// and nothing when none was.
func TestSyncTakesThePacksWritten(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t)
	w, err := s.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n := s.written.Pending(); n != 0 {
		t.Fatalf("%d packs to sync before any was written", n)
	}
	leaf := rawBlock(t, "leaf")
	if err := w.Add(ctx, []blocks.Block{leaf}); err != nil {
		t.Fatal(err)
	}
	pw, err := s.NewPlacedWriter([]Place{{Hash: leaf.Cid().Hash(), Offset: 0, Length: int64(len(leaf.RawData()))}})
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	if ok, err := pw.Put(ctx, leaf); err != nil || !ok {
		t.Fatalf("placed put: %v %v", ok, err)
	}
	if n := s.written.Pending(); n != 2 {
		t.Fatalf("%d packs to sync, want the two written", n)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := s.written.Pending(); n != 0 {
		t.Fatalf("%d packs still to sync after Sync", n)
	}
}
