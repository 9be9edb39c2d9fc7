package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

func randomData(size int, seed int64) []byte {
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	return data
}

func newOffline(t *testing.T) *Node {
	t.Helper()
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	t.Cleanup(func() { n.Close() })
	return n
}

// storedBlocks counts the blocks of the DAG under root that are stored.
func storedBlocks(ctx context.Context, t *testing.T, n *Node, root cid.Cid) (stored, missing int) {
	t.Helper()
	live := map[string]struct{}{}
	damage, err := n.mark(ctx, root, live)
	if err != nil {
		t.Fatal(err)
	}
	return len(live) - len(damage), len(damage)
}

// TestGCDoesNotWaitForReaders: a client that reads part of a blob and
// stops holds up neither a collection nor other reads and writes.
func TestGCDoesNotWaitForReaders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := newOffline(t)
	c := addBytes(t, n, 4<<20, 's')
	rc, err := n.Cat(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// The reader stalls; a collection runs to its end, and a push after it.
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	addBytes(t, n, 1<<20, 't')
}

// TestGCSparesWhatALeaseWroteAndKeeps: blocks stored under a lease, and
// blobs it keeps, survive collections until it is released, and go at
// the first collection after.
func TestGCSparesWhatALeaseWroteAndKeeps(t *testing.T) {
	ctx := context.Background()
	n := newOffline(t)
	old := addBytes(t, n, 1<<20, 'o') // stored before the lease
	lease, err := n.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Keep(ctx, old); err != nil {
		t.Fatal(err)
	}
	written := addBytes(t, n, 1<<20, 'w')
	res, err := n.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 0 {
		t.Fatalf("a collection under a lease removed %d blocks", res.Blocks)
	}
	for _, c := range []cid.Cid{old, written} {
		if _, missing := storedBlocks(ctx, t, n, c); missing != 0 {
			t.Fatalf("%s lost %d blocks under a lease", c, missing)
		}
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lease.Keep(ctx, old); !errors.Is(err, ErrLeaseReleased) {
		t.Fatalf("keep after release: %v", err)
	}
	res, err = n.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks == 0 {
		t.Fatal("released blobs were not collected")
	}
}

// TestGCLoopingDuringPushesAndPullsLosesNothing: collections run back to
// back while blobs are stored and pinned the way push (store, then pin)
// and the registry (store, then hold) do, each under a lease; every pin
// and hold succeeds and every blob stays whole.
func TestGCLoopingDuringPushesAndPullsLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := newOffline(t)
	stop := make(chan struct{})
	var gcs sync.WaitGroup
	gcs.Add(1)
	rounds := 0
	go func() {
		defer gcs.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := n.GC(ctx); err != nil {
				t.Error(err)
				return
			}
			rounds++
		}
	}()
	const ops = 40
	roots := make([]cid.Cid, ops)
	var wg sync.WaitGroup
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := n.Lease(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			defer lease.Release(ctx)
			data := randomData(300<<10+i, int64(i))
			c, err := n.Add(ctx, bytes.NewReader(data))
			if err != nil {
				t.Error(err)
				return
			}
			roots[i] = c
			if i%2 == 0 {
				err = n.PinImage(ctx, catalog.Image{CID: c.String(), Blobs: []string{c.String()}})
			} else {
				err = n.Hold(ctx, fmt.Sprintf("registry/blob-%d", i), c)
			}
			if err != nil {
				t.Errorf("pin or hold %d after storing it: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcs.Wait()
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range roots {
		if !c.Defined() {
			continue
		}
		if _, missing := storedBlocks(ctx, t, n, c); missing != 0 {
			t.Errorf("blob %d lost %d blocks", i, missing)
		}
	}
	t.Logf("%d collections ran during %d stores", rounds, ops)
}

// corruptPack overwrites n bytes at off in the pack holding blob root.
func corruptPack(ctx context.Context, t *testing.T, nd *Node, root cid.Cid, off int64, n int) {
	t.Helper()
	path, _, ok, err := nd.BlobFile(ctx, root)
	if err != nil || !ok {
		t.Fatalf("no pack of %s: %v", root, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xee}, n), off); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptLeafIsNeverHandedOut: a packed leaf whose bytes changed on
// disk reads as missing, not as wrong bytes; offline the read fails, and
// a node with a peer that holds the blob reads it whole again.
func TestCorruptLeafIsNeverHandedOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := randomData(2<<20, 3)

	n := newOffline(t)
	c, err := n.Add(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	corruptPack(ctx, t, n, c, 300<<10, 16)
	rc, err := n.Cat(ctx, c)
	if err == nil {
		got, rerr := io.ReadAll(rc)
		rc.Close()
		if rerr == nil {
			t.Fatalf("read %d bytes of a corrupt blob without an error (equal: %v)", len(got), bytes.Equal(got, data))
		}
	}
	if n.corrupt.Load() == 0 {
		t.Fatal("the corrupt leaf was not noted")
	}

	holder := onlineNode(t)
	reader := onlineNode(t, holder)
	addToEach(ctx, t, data, holder, reader)
	corruptPack(ctx, t, reader, c, 300<<10, 16)
	mustCat(ctx, t, reader, c, data)
}

// TestGCCarriesOnPastACorruptInnerNode: garbage in one inner node of a
// pinned blob no longer fails the whole collection; the damage is
// reported, the blob's leaves are kept, garbage elsewhere goes.
func TestGCCarriesOnPastACorruptInnerNode(t *testing.T) {
	ctx := context.Background()
	n := newOffline(t)
	data := randomData(60<<20, 4) // 240 leaves: two levels of inner nodes
	damaged, err := n.Add(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	healthy := addBytes(t, n, 1<<20, 'h')
	garbage := addBytes(t, n, 1<<20, 'g')
	for _, c := range []cid.Cid{damaged, healthy} {
		if err := n.PinImage(ctx, catalog.Image{CID: c.String(), Blobs: []string{c.String()}}); err != nil {
			t.Fatal(err)
		}
	}
	top, err := n.offline.Get(ctx, damaged)
	if err != nil {
		t.Fatal(err)
	}
	inner := top.Links()[0].Cid
	corruptLooseBlock(t, n, inner)

	res, err := n.GC(ctx)
	if err != nil {
		t.Fatalf("gc with one corrupt block: %v", err)
	}
	if len(res.Damaged) == 0 || res.Damaged[0].Block != inner.String() {
		t.Fatalf("damage not reported: %+v", res.Damaged)
	}
	if stored, _ := storedBlocks(ctx, t, n, garbage); stored != 0 {
		t.Fatalf("garbage kept: %d blocks", stored)
	}
	if _, missing := storedBlocks(ctx, t, n, healthy); missing != 0 {
		t.Fatal("a healthy pinned blob lost blocks")
	}
	// Every leaf of the damaged blob is still in its pack.
	kept := 0
	if ok, err := n.packs.EachLeafOf(ctx, damaged, func(c cid.Cid) {
		if has, _ := n.bstore.Has(ctx, c); has {
			kept++
		}
	}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if kept != 240 {
		t.Fatalf("%d of the damaged blob's 240 leaves kept", kept)
	}
}

// corruptLooseBlock overwrites the bytes of a loose block in a flatfs
// store, and reads it once so that the store drops it.
func corruptLooseBlock(t *testing.T, n *Node, c cid.Cid) {
	t.Helper()
	found := looseBlockFile(t, n, c)
	data, _ := os.ReadFile(found)
	copy(data[len(data)/2:], "garbage!")
	if err := os.WriteFile(found, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := n.bstore.Get(context.Background(), c); !ipld.IsNotFound(err) {
		t.Fatalf("a corrupt block reads as %v, not missing", err)
	}
}

// looseBlockFile is the flatfs file of block c.
func looseBlockFile(t *testing.T, n *Node, c cid.Cid) string {
	t.Helper()
	var found string
	filepath.Walk(filepath.Join(n.home, "blocks"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && filepath.Ext(p) == ".data" {
			if data, _ := os.ReadFile(p); data != nil {
				if got, _ := c.Prefix().Sum(data); got.Hash().String() == c.Hash().String() {
					found = p
				}
			}
		}
		return nil
	})
	if found == "" {
		t.Fatalf("block %s is not a loose file", c)
	}
	return found
}

// TestVerifyFindsCorruptBlocksAndRepairFetchesThem: a corrupt leaf and a
// corrupt inner node of a pinned blob are reported; a repair drops them
// and fetches them again from a peer, after which the store checks clean
// and the blob reads whole.
func TestVerifyFindsCorruptBlocksAndRepairFetchesThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := randomData(50<<20, 5)
	holder := onlineNode(t)
	n := onlineNode(t, holder)
	c := addToEach(ctx, t, data, holder, n)
	if err := n.PinImage(ctx, catalog.Image{CID: c.String(), Blobs: []string{c.String()}}); err != nil {
		t.Fatal(err)
	}
	corruptPack(ctx, t, n, c, 1<<20, 16)
	top, err := n.offline.Get(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	inner := top.Links()[1].Cid
	data2, _ := os.ReadFile(looseBlockFile(t, n, inner))
	copy(data2[10:], "garbage!")
	if err := os.WriteFile(looseBlockFile(t, n, inner), data2, 0o644); err != nil {
		t.Fatal(err)
	}

	res, err := n.Verify(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Corrupt) != 2 || res.OK() {
		t.Fatalf("verify found %v corrupt, want the leaf and the inner node", res.Corrupt)
	}
	res, err = n.Verify(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Missing) != 0 || res.Fetched < 2 {
		t.Fatalf("repair fetched %d, still missing %v", res.Fetched, res.Missing)
	}
	if res, err := n.Verify(ctx, false); err != nil || !res.OK() {
		t.Fatalf("after repair: %+v, %v", res, err)
	}
	mustCat(ctx, t, n, c, data)
}

// TestEmptyShardingFileIsRewritten: a flatfs store whose SHARDING file a
// power cut left empty opens again.
func TestEmptyShardingFileIsRewritten(t *testing.T) {
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	openOffline(t, home).Close()
	if err := os.Truncate(filepath.Join(home, "blocks", "SHARDING"), 0); err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), home, Options{})
	if err != nil {
		t.Fatalf("open with an empty SHARDING file: %v", err)
	}
	n.Close()
}
