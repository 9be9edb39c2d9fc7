package node

import (
	"context"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// Garbage collection runs beside reads and writes rather than stopping
// them, so that no slow client or long pull can hold it up, nor it them.
// What it must spare beyond pins and holds is kept here:
//
//   - every block written from the start of the oldest lease held, or of
//     the collection itself: an operation's blocks stay until it pins or
//     holds them;
//   - the blobs a lease keeps: what an operation reads that was stored
//     before it started.
//
// A block's write is noted before it is stored, and the collector checks
// the notes and deletes a block in one step under the same lock, so a
// block is either noted in time to be spared or written again after it
// went.
type spare struct {
	mu      sync.Mutex
	seq     uint64
	leases  map[*Lease]struct{}
	gcFrom  uint64            // the seq a running collection started at; 0 if none
	written map[string]uint64 // multihash → seq at its write, while anyone needs to know
}

func newSpare() *spare {
	return &spare{leases: map[*Lease]struct{}{}, written: map[string]uint64{}}
}

// wrote notes a block about to be stored.
func (s *spare) wrote(h mh.Multihash) {
	s.mu.Lock()
	if len(s.leases) > 0 || s.gcFrom != 0 {
		s.written[string(h)] = s.seq
	}
	s.mu.Unlock()
}

// floor is the seq from which writes are spared; the caller holds s.mu.
func (s *spare) floor() (uint64, bool) {
	var f uint64
	ok := s.gcFrom != 0
	if ok {
		f = s.gcFrom
	}
	for l := range s.leases {
		if !ok || l.start < f {
			f, ok = l.start, true
		}
	}
	return f, ok
}

// prune forgets writes no lease or collection needs; the caller holds s.mu.
func (s *spare) prune() {
	f, ok := s.floor()
	if !ok {
		clear(s.written)
		return
	}
	for k, seq := range s.written {
		if seq < f {
			delete(s.written, k)
		}
	}
}

func (s *spare) beginGC() {
	s.mu.Lock()
	s.seq++
	s.gcFrom = s.seq
	s.mu.Unlock()
}

func (s *spare) endGC() {
	s.mu.Lock()
	s.gcFrom = 0
	s.prune()
	s.mu.Unlock()
}

// deleteUnlessWritten runs del for block h unless h was written from the
// floor on; it reports whether del ran.
func (s *spare) deleteUnlessWritten(h mh.Multihash, del func() error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq, ok := s.written[string(h)]; ok {
		if f, held := s.floor(); held && seq >= f {
			return false, nil
		}
	}
	return true, del()
}

// keptRoots lists the blobs the leases held keep.
func (s *spare) keptRoots() []cid.Cid {
	s.mu.Lock()
	defer s.mu.Unlock()
	var roots []cid.Cid
	for l := range s.leases {
		roots = append(roots, l.roots...)
	}
	return roots
}

// Lease spares from garbage collection, until released, every block
// written since it was taken and the blobs it keeps. A push or a pull
// takes one before it stores anything and releases it once it has pinned
// what it stored; so does any writer that holds or pins after writing.
type Lease struct {
	s     *spare
	start uint64
	roots []cid.Cid // guarded by s.mu
	done  bool      // guarded by s.mu
}

var _ image.Leaser = (*Node)(nil)

// Lease takes a lease on the node's store (image.Leaser).
func (n *Node) Lease(ctx context.Context) (image.Lease, error) {
	return n.spare.lease(), nil
}

func (s *spare) lease() *Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	l := &Lease{s: s, start: s.seq}
	s.leases[l] = struct{}{}
	return l
}

// ErrLeaseReleased is the error of keeping blobs with a released lease.
var ErrLeaseReleased = errkind.New("lease released", errdefs.ErrFailedPrecondition)

// Keep spares the blobs under roots, and every block below them that is
// stored, until the lease is released.
func (l *Lease) Keep(_ context.Context, roots ...cid.Cid) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.done {
		return ErrLeaseReleased
	}
	l.roots = append(l.roots, roots...)
	return nil
}

// Release ends the lease; releasing again does nothing.
func (l *Lease) Release(context.Context) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if !l.done {
		l.done = true
		delete(l.s.leases, l)
		l.s.prune()
	}
	return nil
}
