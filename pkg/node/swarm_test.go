package node

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// TestSwarmFetchDrawsOnEveryPeerAndCatchesALiar: two peers hold a blob and
// a third serves a corrupt copy of every block. A reader connected to all
// three gets every byte right, from both honest peers, and refuses the
// liar from then on.
func TestSwarmFetchDrawsOnEveryPeerAndCatchesALiar(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b, liar := onlineNode(t), onlineNode(t), onlineNode(t)
	reader := onlineNode(t, a, b, liar)

	data := make([]byte, 16<<20) // 64 leaves
	rand.New(rand.NewSource(7)).Read(data)
	root := addToEach(ctx, t, data, a, b, liar)
	leaves, err := leavesOf(ctx, liar, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		liar.bstore.DeleteBlock(ctx, l)
		bad, _ := blocks.NewBlockWithCid(bytes.Repeat([]byte{'!'}, 256<<10), l)
		if err := liar.bstore.Put(ctx, bad); err != nil {
			t.Fatal(err)
		}
	}
	before := map[*Node]uint64{a: sentBy(a), b: sentBy(b)}

	mustCat(ctx, t, reader, root, data)
	reader.gw.mu.Lock()
	caught := reader.gw.bad[liar.host.ID()]
	reader.gw.mu.Unlock()
	if !caught {
		t.Error("the lying peer was not refused")
	}
	for n, was := range before {
		if sentBy(n) == was {
			t.Errorf("peer %s served nothing", n.host.ID())
		}
	}
	// The leaves, fetched out of order from two peers, were each written
	// at their place in one pack, which holds the blob.
	path, size, ok, err := reader.BlobFile(ctx, root)
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
	a, b := onlineNode(t), onlineNode(t)
	reader := onlineNode(t, a, b)
	data := make([]byte, 8<<20) // 32 leaves
	rand.New(rand.NewSource(8)).Read(data)
	root := addToEach(ctx, t, data, a, b)
	leaves, err := leavesOf(ctx, a, root)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(leaves); i += 5 {
		blk, err := a.bstore.Get(ctx, leaves[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := reader.bstore.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
	}
	mustCat(ctx, t, reader, root, data)
	for i, l := range leaves {
		leaf, packed, err := reader.packs.OpenLeaf(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if packed {
			leaf.Close()
		}
		if want := i%5 != 0; packed != want {
			t.Errorf("leaf %d in a pack: %v, want %v", i, packed, want)
		}
	}
}

// addToEach adds data to each of nodes and returns its root.
func addToEach(ctx context.Context, t *testing.T, data []byte, nodes ...*Node) cid.Cid {
	t.Helper()
	var root cid.Cid
	for _, n := range nodes {
		c, err := n.Add(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		root = c
	}
	return root
}

func leavesOf(ctx context.Context, n *Node, root cid.Cid) ([]cid.Cid, error) {
	nd, err := n.dag.Get(ctx, root)
	if err != nil {
		return nil, err
	}
	var out []cid.Cid
	for _, l := range nd.Links() {
		out = append(out, l.Cid)
	}
	return out, nil
}

// sentBy is what n's gateway has served so far.
func sentBy(n *Node) uint64 { return n.gw.served.Load() }

// mustCat reads the blob c through n and checks it is want.
func mustCat(ctx context.Context, t *testing.T, n *Node, c cid.Cid, want []byte) {
	t.Helper()
	rc, err := n.Cat(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (%v), not the blob", len(got), err)
	}
}
