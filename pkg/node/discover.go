package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/pnet"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
)

// PeerAddrs are the peers a node is told of (--peer, [swarm] peers): those
// whose ID is given (MULTIADDR/p2p/ID), and addresses without an ID, whose
// peers the node finds by dialing them: a DNS name that resolves to every
// node of a cluster (a Kubernetes headless Service) is one.
type PeerAddrs struct {
	Known []peer.AddrInfo
	Find  []multiaddr.Multiaddr
}

// ParsePeerAddrs parses peer addresses with or without /p2p/ID. Those
// without must name a TCP port: learning a peer's ID takes a handshake
// over TCP.
func ParsePeerAddrs(addrs []string) (PeerAddrs, error) {
	var p PeerAddrs
	var known []string
	for _, a := range addrs {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			return PeerAddrs{}, fmt.Errorf("peer %q: %w", a, err)
		}
		if _, err := ma.ValueForProtocol(multiaddr.P_P2P); err == nil {
			known = append(known, a)
			continue
		}
		if _, err := ma.ValueForProtocol(multiaddr.P_TCP); err != nil {
			return PeerAddrs{}, fmt.Errorf("peer %q: give /p2p/PEER-ID, or a TCP address (/dns4/NAME/tcp/PORT) whose peers are found by dialing it", a)
		}
		p.Find = append(p.Find, ma)
	}
	var err error
	if p.Known, err = ParsePeers(known); err != nil {
		return PeerAddrs{}, err
	}
	return p, nil
}

// findInterval is how often addresses without IDs are resolved again, so
// that nodes that join a cluster are found and those that left are let go.
const findInterval = 30 * time.Second

// finder keeps the node connected to the peers behind addresses without
// IDs: it resolves each (every address a DNS name has), learns the ID of
// whoever answers at each by a handshake, and hands the peers to the
// peering service, which keeps them connected; a peer whose address no
// longer resolves is dropped from it.
type finder struct {
	n     *Node
	addrs []multiaddr.Multiaddr

	mu    sync.Mutex
	found map[string]peer.ID // resolved address → the peer there

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newFinder(n *Node, addrs []multiaddr.Multiaddr) *finder {
	ctx, cancel := context.WithCancel(context.Background())
	return &finder{n: n, addrs: addrs, found: map[string]peer.ID{}, ctx: ctx, cancel: cancel}
}

// count is how many peers the finder knows.
func (f *finder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.found)
}

// start finds the peers once, within ctx, then again every findInterval
// until close.
func (f *finder) start(ctx context.Context) {
	f.round(ctx)
	f.wg.Go(func() {
		t := time.NewTicker(findInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f.round(f.ctx)
			case <-f.ctx.Done():
				return
			}
		}
	})
}

func (f *finder) close() {
	f.cancel()
	f.wg.Wait()
}

// round resolves every address and connects to the peers behind the new
// ones.
func (f *finder) round(ctx context.Context) {
	resolved := map[string]multiaddr.Multiaddr{}
	for _, a := range f.addrs {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := madns.DefaultResolver.Resolve(rctx, a)
		cancel()
		if err != nil {
			f.n.log.Warn("peer address does not resolve", "address", a, "err", err)
			continue
		}
		for _, r := range got {
			resolved[r.String()] = r
		}
	}
	f.mu.Lock()
	for a, id := range f.found {
		if _, ok := resolved[a]; !ok {
			delete(f.found, a)
			f.n.peering.RemovePeer(id)
			f.n.log.Info("peer address gone from its name", "address", a, "peer", id)
		}
	}
	var learn []multiaddr.Multiaddr
	for s, a := range resolved {
		id, ok := f.found[s]
		if !ok || len(f.n.host.Network().ConnsToPeer(id)) == 0 {
			learn = append(learn, a)
		}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range learn {
		if f.isSelf(a) {
			continue
		}
		wg.Go(func() {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			id, err := f.learnID(lctx, a)
			cancel()
			if err != nil {
				f.n.log.Debug("no peer learned at address", "address", a, "err", err)
				return
			}
			if id == f.n.host.ID() {
				f.remember(a, "")
				return
			}
			f.remember(a, id)
			p := peer.AddrInfo{ID: id, Addrs: []multiaddr.Multiaddr{a}}
			f.n.peering.AddPeer(p)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := f.n.host.Connect(cctx, p); err != nil {
				f.n.log.Debug("found peer unreachable", "address", a, "peer", id, "err", err)
				return
			}
			f.n.log.Info("found peer", "address", a, "peer", id)
		})
	}
	wg.Wait()
}

func (f *finder) remember(a multiaddr.Multiaddr, id peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" {
		delete(f.found, a.String())
		return
	}
	f.found[a.String()] = id
}

// isSelf says whether a is one of the node's own listen addresses, as a
// cluster's name for every node also names this one.
func (f *finder) isSelf(a multiaddr.Multiaddr) bool {
	own, err := f.n.host.Network().InterfaceListenAddresses()
	if err != nil {
		return false
	}
	for _, o := range own {
		if o.Equal(a) {
			return true
		}
	}
	return false
}

// learnID dials a and runs the start of a libp2p connection, the security
// handshake, far enough to learn the ID of the peer that answers; the
// connection is then closed and the node connects as to any peer, the ID
// checked. Only the noise handshake is spoken, which every shoal and kubo
// node offers.
func (f *finder) learnID(ctx context.Context, a multiaddr.Multiaddr) (peer.ID, error) {
	var d manet.Dialer
	c, err := d.DialContext(ctx, a)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var conn net.Conn = c
	if f.n.psk != nil {
		if conn, err = pnet.NewProtectedConn(f.n.psk, c); err != nil {
			return "", err
		}
	}
	if err := mss.SelectProtoOrFail(noise.ID, conn); err != nil {
		return "", fmt.Errorf("the peer speaks no noise: %w", err)
	}
	tpt, err := noise.New(noise.ID, f.n.priv, nil)
	if err != nil {
		return "", err
	}
	st, err := tpt.WithSessionOptions(noise.DisablePeerIDCheck())
	if err != nil {
		return "", err
	}
	sc, err := st.SecureOutbound(ctx, conn, "")
	if err != nil {
		return "", err
	}
	defer sc.Close()
	id := sc.RemotePeer()
	if id == "" {
		return "", errors.New("the handshake named no peer")
	}
	return id, nil
}
