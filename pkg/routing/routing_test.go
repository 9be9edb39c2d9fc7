package routing_test

import (
	"context"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t *testing.T, a, b host.Host) {
	t.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chain is three hosts, each connected only to the next, and their routers.
type chain struct {
	hosts   []host.Host
	routers []routing.Router
	// provided waits until the first router's announcements are out.
	provided func(t *testing.T)
}

func memoryChain(t *testing.T) chain {
	table := routing.NewMemory()
	var ch chain
	for range 3 {
		h := newHost(t)
		ch.hosts = append(ch.hosts, h)
		ch.routers = append(ch.routers, table.For(peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}))
	}
	connect(t, ch.hosts[0], ch.hosts[1])
	connect(t, ch.hosts[1], ch.hosts[2])
	ch.provided = func(*testing.T) {}
	return ch
}

func dhtChain(t *testing.T) chain {
	var ch chain
	var dhts []*routing.DHT
	for range 3 {
		h := newHost(t)
		d, err := routing.NewDHT(h, routing.DHTOptions{Mode: config.DHTLAN, Announce: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ch.hosts = append(ch.hosts, h)
		ch.routers = append(ch.routers, d)
		dhts = append(dhts, d)
	}
	connect(t, ch.hosts[0], ch.hosts[1])
	connect(t, ch.hosts[1], ch.hosts[2])
	ch.provided = func(t *testing.T) {
		deadline := time.Now().Add(time.Minute)
		for dhts[0].Stat().Provided == 0 || dhts[0].Stat().Queued > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("nothing announced in a minute: %+v", dhts[0].Stat())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return ch
}

// TestRoutersFindHoldersBeyondConnectedPeers runs one contract against
// every Router: what the first of a chain provides, the last, which is not
// connected to it, finds and connects to, by the content's multihash; what
// nobody provides finds nobody; a node never finds itself.
func TestRoutersFindHoldersBeyondConnectedPeers(t *testing.T) {
	for name, build := range map[string]func(*testing.T) chain{"memory": memoryChain, "dht": dhtChain} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ch := build(t)
			held := content(t, "held")
			ch.routers[0].Provide(held)
			ch.provided(t)
			holder, far := ch.hosts[0], ch.hosts[2]
			if far.Network().Connectedness(holder.ID()) == network.Connected {
				_ = far.Network().ClosePeer(holder.ID())
			}

			found := routing.Connect(ctx, far, ch.routers[2], held, 4, 10*time.Second)
			if len(found) != 1 || found[0] != holder.ID() {
				t.Fatalf("holders found: %v; want the first host %s", found, holder.ID())
			}
			if len(far.Network().ConnsToPeer(holder.ID())) == 0 {
				t.Error("Connect returned a holder it is not connected to")
			}
			// A CIDv0 or another codec names the same content by its multihash.
			other := cid.NewCidV1(cid.DagProtobuf, held.Hash())
			if found := routing.Connect(ctx, far, ch.routers[2], other, 4, 10*time.Second); len(found) != 1 {
				t.Errorf("holders of the same multihash under another codec: %v", found)
			}
			if found := routing.Connect(ctx, holder, ch.routers[0], held, 4, 2*time.Second); len(found) != 0 {
				t.Errorf("the holder found %v, itself among them?", found)
			}
			if found := routing.Connect(ctx, far, ch.routers[2], content(t, "nobody"), 4, 2*time.Second); len(found) != 0 {
				t.Errorf("holders of content nobody provided: %v", found)
			}
		})
	}
}
