package routing

import (
	"context"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Memory is a routing table that several nodes of one process share, for
// tests: what one node provides, the others find at once, without a DHT.
type Memory struct {
	mu      sync.Mutex
	holders map[string][]peer.AddrInfo // multihash → providers, in order
}

// NewMemory returns an empty table.
func NewMemory() *Memory { return &Memory{holders: map[string][]peer.AddrInfo{}} }

// For is the Router of the node self: it provides as self.
func (m *Memory) For(self peer.AddrInfo) Router { return memoryRouter{m: m, self: self} }

type memoryRouter struct {
	m    *Memory
	self peer.AddrInfo
}

// Provide records self as a holder of cs; content is keyed by multihash,
// as on the DHT, so a CID's version and codec do not matter.
func (r memoryRouter) Provide(cs ...cid.Cid) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	for _, c := range cs {
		k := string(c.Hash())
		if !slices.ContainsFunc(r.m.holders[k], func(p peer.AddrInfo) bool { return p.ID == r.self.ID }) {
			r.m.holders[k] = append(r.m.holders[k], r.self)
		}
	}
}

func (r memoryRouter) FindProviders(ctx context.Context, c cid.Cid, max int) <-chan peer.AddrInfo {
	r.m.mu.Lock()
	found := slices.Clone(r.m.holders[string(c.Hash())])
	r.m.mu.Unlock()
	if max > 0 && len(found) > max {
		found = found[:max]
	}
	out := make(chan peer.AddrInfo, len(found))
	for _, p := range found {
		out <- p
	}
	close(out)
	return out
}
