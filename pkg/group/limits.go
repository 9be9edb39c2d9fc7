package group

import (
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"golang.org/x/time/rate"
)

// What a member takes from others is bounded, so that no peer (an
// outsider gets no further than the handshake, but a misconfigured or
// compromised member holds the key) makes it parse, keep or fetch without
// end. Every refusal is logged with the bound it hit.
const (
	// maxMessage bounds one message: maxRecords records take about
	// 500 KiB, the status of an image of the most chunks 45 KiB.
	maxMessage = 1 << 20
	// maxRecords bounds the shard records a member keeps, images out of
	// care included, and those one message carries. At the bound, the
	// oldest record of an image out of care is forgotten to make room for
	// a new image; when there is none, the new record is refused.
	maxRecords = 4096
	// maxMembersPerMessage bounds the members one message names; of each,
	// at most maxAddrs addresses are dialled.
	maxMembersPerMessage = 256
	maxAddrs             = 16
	// maxSkew is how far ahead of this member's clock a record from
	// another may be dated. A record wins by its date, so one from the
	// future would win over every later one for as long as it stays ahead.
	maxSkew = time.Minute
	// peerRate and peerBurst bound the streams one peer opens to a member:
	// peerBurst at once, then peerRate a second. A member opens one per
	// member when they connect, two per `shoal shard` and one per
	// `shoal status`, so that scripts that shard images in a loop, or
	// watch a status, stay well within.
	peerRate  = 10
	peerBurst = 50
	// maxServing bounds the streams a member serves at once.
	maxServing = 16
	// authRetry is how long a member waits before it asks again a peer
	// that failed the handshake, and logs it again.
	authRetry = time.Minute
	// maxPlanning bounds how many images' structures a member reads at
	// once; chunks are fetched for one record at a time (reconcile).
	maxPlanning = 2
)

// imageLimits bound the image a record names. A member checks them while
// it reads the image's structure, before it fetches any chunk.
type imageLimits struct {
	blobs  int    // blobs in the image, documents and layer indexes included
	chunks int    // distinct chunks
	bytes  uint64 // of the chunks, and of the blobs as the image declares them
}

// defaultImageLimits take the largest images in common use with room to
// spare: 64 GiB is 262,144 chunks of 256 KiB.
var defaultImageLimits = imageLimits{blobs: 4096, chunks: 1 << 18, bytes: 64 << 30}

// errTooLarge is an image beyond the limits: no member keeps a share of it.
var errTooLarge = errors.New("image beyond the group's limits")

// checkTree refuses an image whose documents name too many blobs, or
// blobs too large, before anything else of it is fetched.
func (l imageLimits) checkTree(t *image.Tree) error {
	if len(t.CIDs) > l.blobs {
		return fmt.Errorf("%w: %d blobs, more than %d", errTooLarge, len(t.CIDs), l.blobs)
	}
	var declared uint64
	seen := map[cid.Cid]bool{}
	for _, d := range t.Blobs {
		c, err := image.CIDOf(d)
		if err != nil || seen[c] || d.Size < 0 {
			continue
		}
		seen[c] = true
		declared += uint64(d.Size)
	}
	if declared > l.bytes {
		return fmt.Errorf("%w: its blobs declare %d bytes, more than %d", errTooLarge, declared, l.bytes)
	}
	return nil
}

// checkPlan refuses a plan that has grown beyond the limits.
func (l imageLimits) checkPlan(p *plan) error {
	if len(p.chunks) > l.chunks {
		return fmt.Errorf("%w: more than %d chunks", errTooLarge, l.chunks)
	}
	if p.size > l.bytes {
		return fmt.Errorf("%w: chunks of more than %d bytes", errTooLarge, l.bytes)
	}
	return nil
}

// peerState is what a member knows of a connected peer that speaks the
// group's protocol; it goes when the peer disconnects.
type peerState struct {
	synced   bool      // told our records since it connected, or being told
	verified bool      // proved the group key on a stream since it connected
	retry    time.Time // failed the handshake: not asked again before
	limit    *rate.Limiter
	limited  bool // refused for its rate, and logged, since it last got through
}

// peerOf is p's state, made when first needed; g.mu is held.
func (g *Group) peerOf(p peer.ID) *peerState {
	st := g.peers[p]
	if st == nil {
		st = &peerState{limit: rate.NewLimiter(peerRate, peerBurst)}
		g.peers[p] = st
	}
	return st
}

// admit decides whether to serve a stream from p: within p's rate and the
// member's bound on streams served at once. done ends the stream's turn.
func (g *Group) admit(p peer.ID) (done func(), ok bool) {
	select {
	case g.serving <- struct{}{}:
	default:
		g.mu.Lock()
		say := time.Since(g.busyWarned) > authRetry
		if say {
			g.busyWarned = time.Now()
		}
		g.mu.Unlock()
		if say {
			g.log.Warn("refusing group streams: serving the most at once", "max", maxServing, "peer", p)
		}
		return nil, false
	}
	g.mu.Lock()
	st := g.peerOf(p)
	allowed := st.limit.Allow()
	say := !allowed && !st.limited
	st.limited = !allowed
	g.mu.Unlock()
	if say {
		g.log.Warn("refusing a peer's group streams until it slows down", "peer", p, "burst", peerBurst, "per_second", peerRate)
	}
	if !allowed {
		<-g.serving
		return nil, false
	}
	return func() { <-g.serving }, true
}

// proven notes that p proved the group key: it is a member.
func (g *Group) proven(p peer.ID) {
	g.mu.Lock()
	st := g.peerOf(p)
	first := !st.verified
	st.verified, st.retry = true, time.Time{}
	g.lastSeen[p] = time.Now()
	g.mu.Unlock()
	if first {
		g.poke()
	}
}

// disproven notes that p answered the handshake without proving the key:
// it is no member, whatever it was before, and is not asked again for a
// while.
func (g *Group) disproven(p peer.ID, err error) {
	g.mu.Lock()
	st := g.peerOf(p)
	was := st.verified
	st.verified = false
	delete(g.lastSeen, p)
	now := time.Now()
	say := now.After(st.retry)
	st.retry = now.Add(authRetry)
	g.mu.Unlock()
	if say {
		g.log.Warn("a peer speaks the group's protocol but does not prove the group key: not a member (it has another key, or none)", "peer", p, "err", err)
	}
	if was {
		g.poke()
	}
}

// unsync makes the next observe tell p our records again.
func (g *Group) unsync(p peer.ID) {
	g.mu.Lock()
	if st := g.peers[p]; st != nil {
		st.synced = false
	}
	g.mu.Unlock()
}
