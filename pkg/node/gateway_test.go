package node

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
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

func onlineNode(t *testing.T, peers ...*Node) *Node {
	t.Helper()
	return onlineNodeWith(t, nil, peers...)
}

// onlineNodeWith is onlineNode with configure changing its config (and
// writing files in its home) first.
func onlineNodeWith(t *testing.T, configure func(home string, cfg *config.Config), peers ...*Node) *Node {
	t.Helper()
	return openOnline(t, Options{}, configure, peers...)
}

// openOnline opens an online node with opts, its config changed by
// configure, connected to peers.
func openOnline(t *testing.T, opts Options, configure func(home string, cfg *config.Config), peers ...*Node) *Node {
	t.Helper()
	home := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Swarm.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Swarm.MDNS = false
	if configure != nil {
		configure(home, &cfg)
	}
	if _, err := config.Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, p := range peers {
		id, err := p.ID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, id.Addresses[0])
	}
	opts.Online, opts.Peers = true, append(opts.Peers, addrs...)
	n, err := Open(context.Background(), home, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestGatewayStreamFromALiarFallsBackToHonestPeers: a peer's gateway serves
// a block whose bytes do not hash to its CID. The reader catches it, stops
// asking that peer, and reads the rest of the file from an honest peer
// over bitswap; every byte is right.
func TestGatewayStreamFromALiarFallsBackToHonestPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	liar := onlineNode(t)
	honest := onlineNode(t)
	reader := onlineNode(t, liar, honest)

	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	root := addToEach(ctx, t, data, liar, honest)
	nd, err := liar.dag.Get(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	leaf := nd.Links()[5].Cid
	if err := liar.bstore.DeleteBlock(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	bad, err := blocks.NewBlockWithCid(bytes.Repeat([]byte{'!'}, 256<<10), leaf)
	if err != nil {
		t.Fatal(err)
	}
	if err := liar.bstore.Put(ctx, bad); err != nil {
		t.Fatal(err)
	}

	cs, err := reader.openCAR(ctx, liar.host.ID(), root)
	if err != nil {
		t.Fatal(err)
	}
	f := newGatewayFile(ctx, reader, root, cs)
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
	reader.gw.mu.Lock()
	caught := reader.gw.bad[liar.host.ID()]
	reader.gw.mu.Unlock()
	if !caught {
		t.Fatal("the lying peer was not marked bad")
	}
	for _, p := range reader.gatewayCandidates() {
		if p == liar.host.ID() {
			t.Fatal("the lying peer is still asked")
		}
	}
	s, err := reader.FetchStat()
	if err != nil {
		t.Fatal(err)
	}
	if s.GatewayBlocks == 0 || s.BitswapBlocks == 0 {
		t.Fatalf("want blocks from both paths, got %+v", s)
	}
}

// TestCatHashingFeedsEveryByteInOrder: the digest CatHashing computes is
// the file's, read off a peer's CAR stream (which sends a repeated chunk
// once) and read locally.
func TestCatHashingFeedsEveryByteInOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	origin := onlineNode(t)
	reader := onlineNode(t, origin)
	data := make([]byte, 1<<20, 2<<20+1000)
	rand.New(rand.NewSource(2)).Read(data)
	data = append(data, make([]byte, 1<<20)...) // four equal chunks
	data = append(data, data[:1000]...)
	root := addToEach(ctx, t, data, origin)
	for _, where := range []string{"from the peer", "here"} {
		whole := sha256x.NewStream()
		rc, err := reader.CatHashing(ctx, root, whole)
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
	if s, err := reader.FetchStat(); err != nil || s.GatewayBlocks == 0 {
		t.Fatalf("the file did not come off a CAR stream: %+v %v", s, err)
	}
}

// TestGatewayServesOnlyLocalBlocks: asking a peer for content it does not
// hold fails fast instead of making it fetch on our behalf.
func TestGatewayServesOnlyLocalBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := onlineNode(t)
	b := onlineNode(t, a)
	missing := cid.MustParse("bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4")
	start := time.Now()
	cs, err := b.openCAR(ctx, a.host.ID(), missing)
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
