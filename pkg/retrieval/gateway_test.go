package retrieval

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// lie replaces the block c in p's store with one whose bytes do not hash
// to it.
func (p *testPeer) lie(t *testing.T, c cid.Cid) {
	t.Helper()
	ctx := context.Background()
	if err := p.store.DeleteBlock(ctx, c); err != nil {
		t.Fatal(err)
	}
	bad, err := blocks.NewBlockWithCid(bytes.Repeat([]byte{'!'}, 256<<10), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.store.Put(ctx, bad); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayStreamFromALiarFallsBackToHonestPeers: a peer's gateway serves
// a block whose bytes do not hash to its CID. The reader catches it, stops
// asking that peer, and reads the rest of the file from an honest peer
// over bitswap; every byte is right.
func TestGatewayStreamFromALiarFallsBackToHonestPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	liar, honest := newTestPeer(t), newTestPeer(t)
	reader := newTestPeer(t, liar, honest)

	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	root := liar.add(t, data)
	honest.add(t, data)
	liar.lie(t, liar.leaves(t, root)[5])

	cs, err := reader.rt.openCAR(ctx, liar.host.ID(), root)
	if err != nil {
		t.Fatal(err)
	}
	f := newGatewayFile(ctx, reader.rt, root, cs)
	f.whole = sha256x.NewStream()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("the file read back differs from the file added")
	}
	// The bad block never joined the digest; the bytes read after the
	// fall-back did.
	if f.whole.Sum() != sha256.Sum256(data) {
		t.Fatal("the stream's digest is not the file's")
	}
	if !reader.rt.bad.Has(liar.host.ID()) {
		t.Fatal("the lying peer was not marked bad")
	}
	for _, p := range reader.rt.gatewayCandidates() {
		if p == liar.host.ID() {
			t.Fatal("the lying peer is still asked")
		}
	}
	bs, err := reader.bs.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if s := reader.rt.Stat(); s.BlocksReceived == 0 || bs.BlocksReceived == 0 {
		t.Fatalf("want blocks from both paths, got %+v and %d over bitswap", s, bs.BlocksReceived)
	}
}

// TestCatHashingFeedsEveryByteInOrder: the digest Cat computes is the
// file's, read off a peer's CAR stream (which sends a repeated chunk
// once) and read locally.
func TestCatHashingFeedsEveryByteInOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	origin := newTestPeer(t)
	reader := newTestPeer(t, origin)
	data := make([]byte, 1<<20, 2<<20+1000)
	rand.New(rand.NewSource(2)).Read(data)
	data = append(data, make([]byte, 1<<20)...) // four equal chunks
	data = append(data, data[:1000]...)
	root := origin.add(t, data)
	for _, where := range []string{"from the peer", "here"} {
		whole := sha256x.NewStream()
		rc, err := reader.rt.Cat(ctx, root, whole)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: the file read back differs from the file added", where)
		}
		if whole.Sum() != sha256.Sum256(data) {
			t.Fatalf("%s: the stream's digest is not the file's", where)
		}
	}
	if s := reader.rt.Stat(); s.BlocksReceived == 0 || s.PeerReads != 1 || s.LocalReads != 1 {
		t.Fatalf("the file did not come off a CAR stream, then from here: %+v", s)
	}
}

// TestGatewayServesOnlyLocalBlocks: asking a peer for content it does not
// hold fails fast instead of making it fetch on our behalf.
func TestGatewayServesOnlyLocalBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newTestPeer(t)
	b := newTestPeer(t, a)
	missing := cid.MustParse("bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4")
	start := time.Now()
	cs, err := b.rt.openCAR(ctx, a.host.ID(), missing)
	if err == nil {
		// A 200 with an empty CAR is also a refusal.
		if _, nerr := cs.br.Next(); nerr == nil {
			t.Fatal("peer served a block it does not have")
		}
		cs.body.Close()
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("refusal took %s", time.Since(start))
	}
}

// TestCatFindsAHolderThroughTheRouter: a reader connected to no peer at
// all reads a blob from the holder its router names, connecting to it.
func TestCatFindsAHolderThroughTheRouter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	table := routing.NewMemory()
	loopback := []string{"/ip4/127.0.0.1/tcp/0"}
	holder := newRoutedTestPeer(t, loopback, table)
	reader := newRoutedTestPeer(t, loopback, table)
	data := make([]byte, 2<<20)
	rand.New(rand.NewSource(3)).Read(data)
	root := holder.add(t, data)
	table.For(peer.AddrInfo{ID: holder.host.ID(), Addrs: holder.host.Addrs()}).Provide(root)
	if n := len(reader.host.Network().Peers()); n != 0 {
		t.Fatalf("the reader is connected to %d peers; the test needs it alone", n)
	}
	reader.mustCat(ctx, t, root, data)
	if reader.host.Network().Connectedness(holder.host.ID()) != network.Connected {
		t.Error("the reader read the blob without connecting to its holder")
	}
	if s := reader.rt.Stat(); s.PeerReads != 1 || s.BlocksReceived == 0 {
		t.Errorf("the blob did not come from the holder's gateway: %+v", s)
	}
}

// TestStreamBuffersGoBackOnlyWhenStoredAndRead: the leaves off a CAR
// stream live in recycled buffers; a buffer reused while the pack or the
// reader still needed it would put another leaf's bytes in one of them.
func TestStreamBuffersGoBackOnlyWhenStoredAndRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	origin := newTestPeer(t)
	reader := newTestPeer(t, origin)
	data := make([]byte, 40<<20)
	rand.New(rand.NewSource(3)).Read(data)
	root := origin.add(t, data)
	rc, err := reader.rt.Cat(ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Small reads: the reader stays on a leaf while the pack's batch
	// writes in the background and the next leaves are read ahead.
	var got bytes.Buffer
	if _, err := io.CopyBuffer(&got, struct{ io.Reader }{rc}, make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("the file read off the stream differs from the file added")
	}
	for i, c := range origin.leaves(t, root) {
		b, err := reader.store.Get(ctx, c)
		if err != nil {
			t.Fatalf("leaf %d as stored: %v", i, err)
		}
		if off := i * 256 << 10; !bytes.Equal(b.RawData(), data[off:off+len(b.RawData())]) {
			t.Fatalf("leaf %d as stored is not the file's bytes", i)
		}
	}
	if made := reader.rt.buffers.Made(); made == 0 || made > int64(len(data))/2 {
		t.Fatalf("the pool made %d bytes of buffers for a %d-byte file: not recycled", made, len(data))
	}
}
