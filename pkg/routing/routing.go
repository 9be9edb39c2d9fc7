// Package routing tells who holds content beyond the connected peers, and
// tells others what this node holds. Retrieval, the mirror and groups use
// it alike; the node's DHT is one Router, Memory another, for tests.
package routing

import (
	"context"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Router announces and finds holders of content.
type Router interface {
	// Provide announces, in the background, that this node holds cs.
	Provide(cs ...cid.Cid)
	// FindProviders sends up to max holders of c as they are found, and
	// closes the channel when the search or ctx ends.
	FindProviders(ctx context.Context, c cid.Cid, max int) <-chan peer.AddrInfo
}

// Connect finds up to max holders of c through r, waiting at most wait,
// dials those h is not connected to, and returns the holders h is
// connected to. h itself is never among them.
func Connect(ctx context.Context, h host.Host, r Router, c cid.Cid, max int, wait time.Duration) []peer.ID {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []peer.ID
	)
	for p := range r.FindProviders(ctx, c, max) {
		if p.ID == h.ID() {
			continue
		}
		wg.Go(func() {
			if h.Network().Connectedness(p.ID) != network.Connected {
				if err := h.Connect(ctx, p); err != nil {
					return
				}
			}
			mu.Lock()
			out = append(out, p.ID)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
