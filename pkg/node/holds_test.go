package node

import (
	"context"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

func TestHoldsKeepBlobsUntilReleasedAndSurviveRestart(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	a := addBytes(t, n, 300<<10, 'a')
	b := addBytes(t, n, 2000, 'b')
	shared := addBytes(t, n, 100, 's')
	if err := n.Hold(ctx, "registry/r1/a", a, shared); err != nil {
		t.Fatal(err)
	}
	if err := n.Hold(ctx, "registry/r2/b", b); err != nil {
		t.Fatal(err)
	}
	img := catalog.Image{CID: shared.String(), Created: time.Now(), Blobs: []string{shared.String()}}
	if err := n.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := n.Hold(ctx, "bad//name", a); err == nil {
		t.Fatal("a hold name with an empty segment was accepted")
	}
	n.Close()

	n = openOffline(t, home)
	defer n.Close()
	if res, err := n.GC(ctx); err != nil || res.Blocks != 0 {
		t.Fatalf("gc with everything held: %+v, %v", res, err)
	}
	// Replacing a hold unpins what it no longer names; releasing one keeps
	// what an image still names.
	if err := n.Hold(ctx, "registry/r2/b"); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx, "registry/r1/a"); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx, "registry/never"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for c, want := range map[cid.Cid]bool{a: false, b: false, shared: true} {
		if has, _ := n.Blockstore().Has(ctx, c); has != want {
			t.Errorf("after release and gc: has %s = %v, want %v", c, has, want)
		}
	}
}

// TestBlockHoldsKeepSingleBlocks: a block hold keeps the blocks it names
// through GC and a restart, and only those; a block not stored here is
// refused.
func TestBlockHoldsKeepSingleBlocks(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	file := addBytes(t, n, 1<<20, 'f') // four leaves under one node
	leaves, err := leavesOf(ctx, n, file)
	if err != nil || len(leaves) != 4 {
		t.Fatalf("leaves of a 1 MiB file: %v, %v", leaves, err)
	}
	if err := n.HoldBlocks(ctx, "group/g/img", leaves[1]); err != nil {
		t.Fatal(err)
	}
	absent, _ := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum([]byte("not stored"))
	if err := n.HoldBlocks(ctx, "group/g/other", absent); err == nil {
		t.Fatal("a hold of a block that is not here was accepted")
	}
	n.Close()

	n = openOffline(t, home)
	defer n.Close()
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	has := func(c cid.Cid) bool { ok, _ := n.Blockstore().Has(ctx, c); return ok }
	if !has(leaves[1]) || has(file) {
		t.Fatalf("after gc: held leaf kept %v, unheld root kept %v", has(leaves[1]), has(file))
	}
	if err := n.Release(ctx, "group/g/img"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if has(leaves[1]) {
		t.Fatal("a released block survived gc")
	}
}
