package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"
)

// tcpPort is the TCP port n listens on.
func tcpPort(t *testing.T, n *Node) string {
	t.Helper()
	for _, a := range n.host.Addrs() {
		if p, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
			return p
		}
	}
	t.Fatal("the node listens on no TCP port")
	return ""
}

// A peer given without its ID, by IP address or by a DNS name, is found:
// the node learns who answers there and connects, as a cluster's nodes
// find each other behind one Service name.
func TestPeersFoundByAddressWithoutID(t *testing.T) {
	for _, c := range []struct {
		name string
		addr func(port string) string
		key  bool
	}{
		{"ip", func(p string) string { return "/ip4/127.0.0.1/tcp/" + p }, false},
		{"dns", func(p string) string { return "/dns4/localhost/tcp/" + p }, false},
		{"private network", func(p string) string { return "/ip4/127.0.0.1/tcp/" + p }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var key []byte
			if c.key {
				var err error
				if key, err = NewSwarmKey(); err != nil {
					t.Fatal(err)
				}
			}
			a := onlineNodeWith(t, inGroup(key))
			b := openOnline(t, Options{Peers: []string{c.addr(tcpPort(t, a))}}, inGroup(key))
			deadline := time.Now().Add(10 * time.Second)
			for len(b.host.Network().ConnsToPeer(a.host.ID())) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("b did not connect to a")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := b.finder.count(); got != 1 {
				t.Errorf("b found %d peers, want 1", got)
			}
		})
	}
}

// The node's own address behind the name is not a peer.
func TestFindingSkipsItself(t *testing.T) {
	a := onlineNode(t)
	if err := a.AddPeerAddrs(context.Background(), []string{"/ip4/127.0.0.1/tcp/" + tcpPort(t, a)}); err == nil || !strings.Contains(err.Error(), "no peer found") {
		t.Fatalf("a found a peer at its own address: %v", err)
	}
	b := onlineNode(t)
	if err := a.AddPeerAddrs(context.Background(), []string{"/ip4/127.0.0.1/tcp/" + tcpPort(t, b)}); err != nil {
		t.Fatal(err)
	}
	if len(a.host.Network().ConnsToPeer(b.host.ID())) == 0 {
		t.Fatal("a did not connect to b")
	}
}

func TestParsePeerAddrs(t *testing.T) {
	p, err := ParsePeerAddrs([]string{
		"/ip4/10.0.0.2/tcp/4051/p2p/12D3KooWEhB5ekoFQLR3LstDbhDFiwPrVCW9fTXuVkzbFKNvREDx",
		"/dns4/shoal.shoal-system.svc/tcp/4051",
		"/ip4/10.0.0.3/tcp/4051",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Known) != 1 || len(p.Find) != 2 {
		t.Fatalf("known %v, find %v", p.Known, p.Find)
	}
	for _, bad := range []string{"not-a-multiaddr", "/dns4/shoal/udp/4051/quic-v1", "/ip4/10.0.0.3"} {
		if _, err := ParsePeerAddrs([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParsePeerAddrs(f *testing.F) {
	for _, s := range []string{
		"/ip4/10.0.0.2/tcp/4051/p2p/12D3KooWEhB5ekoFQLR3LstDbhDFiwPrVCW9fTXuVkzbFKNvREDx",
		"/dns4/shoal.shoal-system.svc/tcp/4051",
		"/ip6/::1/udp/4051/quic-v1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeerAddrs([]string{s})
		if err != nil {
			return
		}
		if len(p.Known)+len(p.Find) != 1 {
			t.Fatalf("%q: %d known, %d to find", s, len(p.Known), len(p.Find))
		}
	})
}
