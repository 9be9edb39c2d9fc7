package retrieval

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestGatewayStreamsPreferTCP: with a TCP and a QUIC connection between
// two peers, a blob's CAR stream goes over TCP, whichever connection
// libp2p would pick.
func TestGatewayStreamsPreferTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	both := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	a, b := newTestPeerOn(t, both), newTestPeerOn(t, both)
	var tcpAddr ma.Multiaddr
	for _, addr := range a.host.Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_TCP); err == nil {
			tcpAddr = addr
		}
	}
	if tcpAddr == nil || len(onlyQUIC(b)) == 0 {
		t.Fatalf("a listens on %v, b on %v; want TCP and QUIC", a.host.Addrs(), b.host.Addrs())
	}
	// Each dials the other at once, a over QUIC and b over TCP, as peers
	// that find each other by mDNS do: that leaves two connections, most
	// times. libp2p's own choice among them is the newest or the busiest.
	connectBoth := func() int {
		done := make(chan error, 2)
		go func() {
			done <- a.host.Connect(ctx, peer.AddrInfo{ID: b.host.ID(), Addrs: onlyQUIC(b)})
		}()
		go func() {
			done <- b.host.Connect(ctx, peer.AddrInfo{ID: a.host.ID(), Addrs: []ma.Multiaddr{tcpAddr}})
		}()
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		return len(b.host.Network().ConnsToPeer(a.host.ID()))
	}
	c := a.add(t, bytes.Repeat([]byte{'q'}, 3<<20))
	var onTCP, onQUIC int
	for attempts := 0; onTCP+onQUIC == 0; attempts++ {
		if attempts == 50 {
			t.Fatal("50 simultaneous dials never left both connections up while a stream opened")
		}
		_ = b.host.Network().ClosePeer(a.host.ID())
		for len(a.host.Network().ConnsToPeer(b.host.ID())) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if connectBoth() < 2 {
			continue
		}
		cs, err := b.rt.openCAR(ctx, a.host.ID(), c)
		if err != nil {
			t.Fatal(err)
		}
		// libp2p may close one of two connections to a peer at any time
		// (on a loaded machine, often before the stream opens): only a
		// stream opened while both were up says which one was chosen.
		conns := b.host.Network().ConnsToPeer(a.host.ID())
		if len(conns) == 2 {
			for _, conn := range conns {
				for _, s := range conn.GetStreams() {
					if s.Protocol() == "" || s.Protocol() == "/ipfs/id/1.0.0" {
						continue
					}
					if _, err := conn.RemoteMultiaddr().ValueForProtocol(ma.P_TCP); err == nil {
						onTCP++
					} else {
						onQUIC++
					}
				}
			}
		}
		cs.body.Close()
	}
	if onTCP == 0 || onQUIC != 0 {
		t.Fatalf("gateway streams: %d over TCP, %d over QUIC; want all over TCP", onTCP, onQUIC)
	}
}

func onlyQUIC(p *testPeer) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, addr := range p.host.Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			out = append(out, addr)
		}
	}
	return out
}
