package retrieval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// holderOfABlob is a peer holding a blob of 20 leaves (random bytes from
// seed), another peer connected to it, the blob's root and its leaves.
func holderOfABlob(t *testing.T, seed int64) (holder, asker *testPeer, root cid.Cid, leaves []cid.Cid) {
	t.Helper()
	holder = newTestPeer(t)
	asker = newTestPeer(t, holder)
	data := make([]byte, 5<<20)
	rand.New(rand.NewSource(seed)).Read(data)
	root = holder.add(t, data)
	return holder, asker, root, holder.leaves(t, root)
}

// TestHavesTellWhichLeavesAPeerHolds: a peer holding part of a blob
// answers with a bitmap of exactly the leaves it stores, and with none
// for a blob whose shape it does not know.
func TestHavesTellWhichLeavesAPeerHolds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, asker, root, leaves := holderOfABlob(t, 9)
	for _, i := range []int{3, 7, 19} {
		if err := holder.store.DeleteBlock(ctx, leaves[i]); err != nil {
			t.Fatal(err)
		}
	}
	bits, err := asker.rt.askHaves(ctx, holder.host.ID(), root, len(leaves))
	if err != nil {
		t.Fatal(err)
	}
	for i := range leaves {
		want := i != 3 && i != 7 && i != 19
		if has(bits, i) != want {
			t.Errorf("leaf %d: held %v, want %v", i, has(bits, i), want)
		}
	}
	unknown, _ := root.Prefix().Sum([]byte("a blob nobody added"))
	if bits, err := asker.rt.askHaves(ctx, holder.host.ID(), unknown, 1); err != nil || bits != nil {
		t.Errorf("haves of a blob the peer cannot walk: %v, %v; want none", bits, err)
	}
	if _, err := asker.rt.askHaves(ctx, holder.host.ID(), root, len(leaves)+1); err == nil {
		t.Error("a bitmap for a blob of another shape was accepted")
	}
}

// TestHavesFollowALiveFetch: while a node fetches a blob, the bitmap it
// serves gains each leaf the fetch stores at once, though it was made
// moments before.
func TestHavesFollowALiveFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, asker, root, leaves := holderOfABlob(t, 10)
	index := map[cid.Cid][]int{}
	for i, l := range leaves {
		index[l] = append(index[l], i)
	}
	fetched, err := holder.store.Get(ctx, leaves[3])
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 7} {
		if err := holder.store.DeleteBlock(ctx, leaves[i]); err != nil {
			t.Fatal(err)
		}
	}
	mark, end := holder.rt.liveHaves(ctx, root, index)
	defer end()
	held := func() []bool {
		t.Helper()
		bits, err := asker.rt.askHaves(ctx, holder.host.ID(), root, len(leaves))
		if err != nil {
			t.Fatal(err)
		}
		return []bool{has(bits, 3), has(bits, 7), has(bits, 8)}
	}
	if got := held(); !slices.Equal(got, []bool{false, false, true}) {
		t.Fatalf("leaves 3, 7, 8 held: %v before the fetch stored any, want false, false, true", got)
	}
	if err := holder.store.Put(ctx, fetched); err != nil {
		t.Fatal(err)
	}
	mark(fetched.Cid())
	if got := held(); !slices.Equal(got, []bool{true, false, true}) {
		t.Errorf("leaves 3, 7, 8 held: %v after the fetch stored leaf 3, want true, false, true", got)
	}
}

// FuzzHavesMessages: whatever a peer sends, reading a haves request or
// response fails or gives a CID, or a bitmap of the asked size.
func FuzzHavesMessages(f *testing.F) {
	req := binary.AppendUvarint(nil, 36)
	f.Add(append(req, bytes.Repeat([]byte{1}, 36)...), 20)
	f.Add(append(binary.AppendUvarint(nil, 20), 0xff, 0xff, 0x0f), 20)
	f.Add([]byte{0}, 5)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1)
	f.Fuzz(func(t *testing.T, data []byte, want int) {
		if c, err := readCIDRequest(bufio.NewReader(bytes.NewReader(data))); err == nil && !c.Defined() {
			t.Fatal("an undefined CID was accepted")
		}
		if want < 1 || want > maxHavesLeaves {
			return
		}
		bits, err := readHaves(bufio.NewReader(bytes.NewReader(data)), want)
		if err == nil && bits != nil && len(bits) != (want+7)/8 {
			t.Fatalf("bitmap of %d bytes for %d leaves", len(bits), want)
		}
	})
}
