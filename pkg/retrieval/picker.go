package retrieval

import (
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// leafPicker decides, for a swarm fetch, which leaf to ask for next and
// of which peer. Knowing who holds what (haves), it spreads the asks:
//
//   - The peer with the fewest asks in flight (then the fewest leaves
//     served) that holds a wanted leaf is asked for the rarest one it
//     holds (fewest holders; one of those at random, so that nodes
//     fetching together rarely ask for the same leaf).
//   - A seed (a peer holding every leaf still wanted: the origin) is asked
//     only for leaves nobody else holds, and only those this node ranks
//     first for, by rendezvous hashing, among the peers lacking them. Each
//     such leaf thus leaves the seed once and spreads from the node that
//     took it, and the seed's link carries what only it can send.
//   - When those rules leave nothing to ask, any holder of any wanted leaf
//     is asked; with nothing known, leaves go in order and every peer is
//     asked in turn.
//   - A leaf a reader is waiting for (hurry) goes before all of these.
type leafPicker struct {
	peers   []peer.ID
	missing []cid.Cid
	known   *haves // nil: nothing known
	isBad   func(peer.ID) bool

	// rank[q][i] is peers[q]'s rendezvous rank for missing[i]; the last
	// row is this node's.
	rank [][]uint64
	// positions[i] is where missing[i] is in the blob, for reading the
	// peers' bitmaps.
	positions [][]int

	index map[cid.Cid]int // position of each leaf in missing

	mu       sync.Mutex
	urgent   cid.Cid // the leaf a reader waits for
	taken    []bool
	first    int // missing[:first] are all taken
	left     int
	served   map[peer.ID]int // leaves each peer has sent
	inflight map[peer.ID]int // leaves being asked of each peer
}

func newLeafPicker(self peer.ID, peers []peer.ID, missing []cid.Cid, known *haves, isBad func(peer.ID) bool) *leafPicker {
	lp := &leafPicker{
		peers: peers, missing: missing, known: known, isBad: isBad,
		taken: make([]bool, len(missing)), left: len(missing),
		served: map[peer.ID]int{}, inflight: map[peer.ID]int{},
		index: make(map[cid.Cid]int, len(missing)),
	}
	for i, c := range missing {
		lp.index[c] = i
	}
	if known != nil {
		lp.positions = make([][]int, len(missing))
		for i, c := range missing {
			lp.positions[i] = known.index[c]
		}
		for _, p := range append(slices.Clone(peers), self) {
			r := make([]uint64, len(missing))
			for i, c := range missing {
				h := fnv.New64a()
				h.Write([]byte(p))
				h.Write(c.Bytes())
				r[i] = h.Sum64()
			}
			lp.rank = append(lp.rank, r)
		}
	}
	return lp
}

// next takes a leaf and names the peer to ask first ("" for none in
// particular); ok is false once every leaf is taken.
func (lp *leafPicker) next() (leaf cid.Cid, prefer peer.ID, ok bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.left == 0 {
		return cid.Undef, "", false
	}
	for lp.first < len(lp.taken) && lp.taken[lp.first] {
		lp.first++
	}
	i, p := lp.first, peer.ID("")
	if lp.known != nil {
		// The leaf a reader waits for, if the rules allow asking for it
		// now (else it comes in its turn), then any.
		found := false
		if u, ok := lp.index[lp.urgent]; ok && !lp.taken[u] {
			i, p, found = lp.choose(u, 1)
		}
		if !found {
			if j, q, ok := lp.choose(-1, 2); ok {
				i, p = j, q
			} else {
				i, p = lp.first, ""
			}
		}
	} else if u, ok := lp.index[lp.urgent]; ok && !lp.taken[u] {
		i = u
	}
	lp.taken[i] = true
	lp.left--
	if p != "" {
		lp.inflight[p]++
	}
	return lp.missing[i], p, true
}

// hurry makes leaf c the next one taken, if it is still to take: a
// reader is waiting for it.
func (lp *leafPicker) hurry(c cid.Cid) {
	lp.mu.Lock()
	lp.urgent = c
	lp.mu.Unlock()
}

// choose applies the rules above to what the peers last said they hold,
// to leaf only (-1: any), in passes passes (1: the seed rules hold). It
// runs for every leaf taken, so it works on peer indices and leaf
// positions rather than maps.
func (lp *leafPicker) choose(only, passes int) (int, peer.ID, bool) {
	bits := lp.known.snapshot(lp.peers)
	holds := func(q, i int) bool { return holdsAt(bits[q], lp.positions[i]) }
	count := make([]int, len(lp.missing))
	for i := lp.first; i < len(lp.missing); i++ {
		if lp.taken[i] {
			continue
		}
		for q := range lp.peers {
			if holds(q, i) {
				count[i]++
			}
		}
	}
	order := make([]int, len(lp.peers))
	for q := range order {
		order[q] = q
	}
	slices.SortStableFunc(order, func(a, b int) int {
		pa, pb := lp.peers[a], lp.peers[b]
		if d := lp.inflight[pa] - lp.inflight[pb]; d != 0 {
			return d
		}
		return lp.served[pa] - lp.served[pb]
	})
	self := len(lp.peers)
	mine := func(i int) bool {
		for q := range lp.peers {
			if lp.rank[q][i] > lp.rank[self][i] && !holds(q, i) {
				return false
			}
		}
		return true
	}
	seed := make([]bool, len(lp.peers))
	for q := range lp.peers {
		seed[q] = true
		for i := lp.first; i < len(lp.missing); i++ {
			if !lp.taken[i] && !holds(q, i) {
				seed[q] = false
				break
			}
		}
	}
	from, to := lp.first, len(lp.missing)
	if only >= 0 {
		from, to = only, only+1
	}
	for pass := range passes { // the second pass drops the seed rules
		for _, q := range order {
			if lp.isBad(lp.peers[q]) {
				continue
			}
			var rarest []int
			for i := from; i < to; i++ {
				if lp.taken[i] || !holds(q, i) {
					continue
				}
				if pass == 0 && ((count[i] == 1 && !mine(i)) || (seed[q] && count[i] > 1)) {
					continue
				}
				if len(rarest) > 0 && count[i] < count[rarest[0]] {
					rarest = rarest[:0]
				}
				if len(rarest) == 0 || count[i] == count[rarest[0]] {
					rarest = append(rarest, i)
				}
			}
			if len(rarest) > 0 {
				return rarest[rand.IntN(len(rarest))], lp.peers[q], true
			}
		}
	}
	return 0, "", false
}

// order is the peers to ask for a leaf: prefer first, then those that
// have served least so far (ties at random).
func (lp *leafPicker) order(prefer peer.ID) []peer.ID {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	ps := slices.Clone(lp.peers)
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	slices.SortStableFunc(ps, func(a, b peer.ID) int {
		switch {
		case a == prefer:
			return -1
		case b == prefer:
			return 1
		}
		return lp.served[a] - lp.served[b]
	})
	return ps
}

// done records that the ask of prefer ended, the leaf served by from ("":
// over bitswap, or not at all).
func (lp *leafPicker) done(prefer, from peer.ID) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if prefer != "" {
		lp.inflight[prefer]--
	}
	if from != "" {
		lp.served[from]++
	}
}

// stop takes every leaf left, so that next reports none.
func (lp *leafPicker) stop() {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.left = 0
}
