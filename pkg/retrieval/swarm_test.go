package retrieval

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"testing"
	"time"
)

// TestSwarmFetchDrawsOnEveryPeerAndCatchesALiar: two peers hold a blob and
// a third serves a corrupt copy of every leaf. A reader connected to all
// three gets every byte right, from both honest peers, refuses the liar
// from then on, and holds the blob in one pack.
func TestSwarmFetchDrawsOnEveryPeerAndCatchesALiar(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b, liar := newTestPeer(t), newTestPeer(t), newTestPeer(t)
	reader := newTestPeer(t, a, b, liar)

	data := make([]byte, 16<<20) // 64 leaves
	rand.New(rand.NewSource(7)).Read(data)
	root := a.add(t, data)
	b.add(t, data)
	liar.add(t, data)
	for _, l := range liar.leaves(t, root) {
		liar.lie(t, l)
	}
	reader.mustCat(ctx, t, root, data)
	if !reader.rt.bad.Has(liar.host.ID()) {
		t.Error("the lying peer was not refused")
	}
	for _, p := range []*testPeer{a, b} {
		if p.rt.Stat().Served == 0 {
			t.Errorf("peer %s served nothing", p.host.ID())
		}
	}
	// The leaves, fetched out of order from two peers, were each written
	// at their place in one pack, which holds the blob.
	path, size, ok, err := reader.store.BlobFile(ctx, root)
	if err != nil || !ok || size != int64(len(data)) {
		t.Fatalf("reader's pack of the blob: ok %v, size %d, err %v", ok, size, err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the pack does not hold the blob (err %v)", err)
	}
}

// TestSwarmReadMixesFetchedAndLocalLeaves: a reader that holds some of a
// blob's leaves already fetches the rest from two peers into a pack, and
// reads the blob back whole, the leaves it had from its store and the
// others from the pack.
func TestSwarmReadMixesFetchedAndLocalLeaves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := newTestPeer(t), newTestPeer(t)
	reader := newTestPeer(t, a, b)
	data := make([]byte, 8<<20) // 32 leaves
	rand.New(rand.NewSource(8)).Read(data)
	root := a.add(t, data)
	b.add(t, data)
	leaves := a.leaves(t, root)
	for i := 0; i < len(leaves); i += 5 {
		blk, err := a.store.Get(ctx, leaves[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := reader.store.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
	}
	reader.mustCat(ctx, t, root, data)
	packed := reader.store.Leaves()
	defer packed.Close()
	for i, l := range leaves {
		_, inPack, err := packed.Open(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if want := i%5 != 0; inPack != want {
			t.Errorf("leaf %d in a pack: %v, want %v", i, inPack, want)
		}
	}
}
