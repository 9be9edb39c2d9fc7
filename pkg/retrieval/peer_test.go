package retrieval

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/packs"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// testPeer is what a Retriever works in, without a node: a libp2p host on
// loopback, a store of packs over loose blocks in memory, and bitswap.
type testPeer struct {
	host  host.Host
	store *packs.Store
	bs    *bitswap.Bitswap
	dag   ipld.DAGService
	rt    *Retriever
}

func newTestPeer(t *testing.T, connectTo ...*testPeer) *testPeer {
	t.Helper()
	return newTestPeerOn(t, []string{"/ip4/127.0.0.1/tcp/0"}, connectTo...)
}

// newTestPeerOn is newTestPeer listening on listen.
func newTestPeerOn(t *testing.T, listen []string, connectTo ...*testPeer) *testPeer {
	t.Helper()
	return newRoutedTestPeer(t, listen, nil, connectTo...)
}

// newRoutedTestPeer is newTestPeerOn finding holders beyond its
// connected peers in table (none if nil).
func newRoutedTestPeer(t *testing.T, listen []string, table *routing.Memory, connectTo ...*testPeer) *testPeer {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings(listen...), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	loose := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()), blockstore.NoPrefix())
	store, err := packs.New(loose, dssync.MutexWrap(ds.NewMapDatastore()), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bs := bitswap.New(ctx, bsnet.NewFromIpfsHost(h), nil, store)
	p := &testPeer{host: h, store: store, bs: bs, dag: merkledag.NewDAGService(blockservice.New(store, bs))}
	var router routing.Router
	if table != nil {
		router = table.For(peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	p.rt = New(Options{Host: h, Store: store, DAG: p.dag, Router: router})
	t.Cleanup(func() {
		p.rt.Close()
		bs.Close()
		cancel()
		h.Close()
	})
	for _, q := range connectTo {
		if err := h.Connect(ctx, peer.AddrInfo{ID: q.host.ID(), Addrs: q.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// add stores data as a blob of the kubo layout here and returns its root.
func (p *testPeer) add(t *testing.T, data []byte) cid.Cid {
	t.Helper()
	c, err := blob.Add(context.Background(), p.dag, bytes.NewReader(data), blob.Kubo)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaves are the leaves under root, which must be one level deep.
func (p *testPeer) leaves(t *testing.T, root cid.Cid) []cid.Cid {
	t.Helper()
	nd, err := p.dag.Get(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	var out []cid.Cid
	for _, l := range nd.Links() {
		out = append(out, l.Cid)
	}
	return out
}

// mustCat reads the blob c through p and checks it is want.
func (p *testPeer) mustCat(ctx context.Context, t *testing.T, c cid.Cid, want []byte) {
	t.Helper()
	rc, err := p.rt.Cat(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (%v), not the blob", len(got), err)
	}
}
