package retrieval

import (
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// TestLeafPickerAsksSeedsOnlyForWhatNobodyElseHas: of twenty wanted
// leaves, a seed holds all and another peer the first ten. The ten come
// from the peer; the seed is asked only for the other ten, those this
// node ranks first for ahead of the rest.
func TestLeafPickerAsksSeedsOnlyForWhatNobodyElseHas(t *testing.T) {
	self, seed, other := peer.ID("self"), peer.ID("seed"), peer.ID("other")
	var leaves []cid.Cid
	for i := range 20 {
		c, _ := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum(fmt.Appendf(nil, "leaf %d", i))
		leaves = append(leaves, c)
	}
	known := &haves{index: map[cid.Cid][]int{}, bits: map[peer.ID][]byte{
		seed:  {0xff, 0xff, 0x0f},
		other: {0xff, 0x03, 0x00},
	}}
	for i, l := range leaves {
		known.index[l] = []int{i}
	}
	lp := newLeafPicker(self, []peer.ID{seed, other}, leaves, known, func(peer.ID) bool { return false })
	position := map[cid.Cid]int{}
	for i, l := range leaves {
		position[l] = i
	}
	mineFirst := true
	for range leaves {
		leaf, prefer, ok := lp.next()
		if !ok {
			t.Fatal("ran out of leaves")
		}
		i := position[leaf]
		switch {
		case i < 10 && prefer != other:
			t.Errorf("leaf %d, held by both, asked of %q, want the other peer", i, prefer)
		case i >= 10 && prefer != seed:
			t.Errorf("leaf %d, held by the seed alone, asked of %q", i, prefer)
		}
		if prefer == seed {
			mine := lp.rank[2][i] > lp.rank[1][i] // this node outranks the other peer
			if mine && !mineFirst {
				t.Errorf("leaf %d, ranked first by this node, asked of the seed after one ranked first by another", i)
			}
			mineFirst = mineFirst && mine
		}
	}
	if _, _, ok := lp.next(); ok {
		t.Error("a leaf was taken twice")
	}
}
