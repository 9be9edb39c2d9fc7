package node

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// TestNodeWiresRetrievalToItsGater: the peers its retrieval catches
// lying are the peers the node's connection gater refuses. A reader
// connected to an honest peer and a liar reads the blob right, through
// the node, and the liar cannot connect to it again.
func TestNodeWiresRetrievalToItsGater(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	honest, liar := onlineNode(t), onlineNode(t)
	reader := onlineNode(t, honest, liar)
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(7)).Read(data)
	root := addToEach(ctx, t, data, honest, liar)
	leaves, err := leavesOf(ctx, liar, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		if err := liar.bstore.DeleteBlock(ctx, l); err != nil {
			t.Fatal(err)
		}
		bad, _ := blocks.NewBlockWithCid(bytes.Repeat([]byte{'!'}, 256<<10), l)
		if err := liar.bstore.Put(ctx, bad); err != nil {
			t.Fatal(err)
		}
	}
	mustCat(ctx, t, reader, root, data)
	if !reader.bad.Has(liar.host.ID()) {
		t.Fatal("the lying peer was not caught")
	}
	if err := reader.host.Connect(ctx, peer.AddrInfo{ID: liar.host.ID(), Addrs: liar.host.Addrs()}); err == nil {
		t.Error("the lying peer connected again")
	}
	if s, err := reader.FetchStat(); err != nil || s.PeerReads != 1 || s.GatewayBlocks == 0 {
		t.Errorf("fetch counts through the node: %+v, %v", s, err)
	}
}

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
