package image

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"
)

// Leaser is a store whose garbage collection may run while an operation
// stores blobs and still spares them until the operation has pinned or
// held them: the operation takes a lease before it stores or reads
// anything and releases it at its end. A store without leases (kubo, whose
// collection is its own) needs none.
type Leaser interface {
	Lease(ctx context.Context) (Lease, error)
}

// Lease spares blocks from garbage collection until released: every block
// stored since it was taken, and the blobs it keeps.
type Lease interface {
	// Keep spares the blobs under roots as far as they are stored, however
	// long ago: blobs an operation reads before it pins them.
	Keep(ctx context.Context, roots ...cid.Cid) error
	Release(ctx context.Context) error
}

// TakeLease takes a lease on store if it has leases, else returns one that
// does nothing.
func TakeLease(ctx context.Context, store any) (Lease, error) {
	if l, ok := store.(Leaser); ok {
		return l.Lease(ctx)
	}
	return noLease{}, nil
}

type noLease struct{}

func (noLease) Keep(context.Context, ...cid.Cid) error { return nil }
func (noLease) Release(context.Context) error          { return nil }

// catKept reads blob c with lease keeping it, so that a collection
// between the read and the pin does not take what was read.
func catKept(ctx context.Context, store Store, lease Lease, c cid.Cid) (io.ReadCloser, error) {
	if err := lease.Keep(ctx, c); err != nil {
		return nil, err
	}
	return store.Cat(ctx, c)
}

// WithLease runs f under a lease on store: what f stores is spared by
// garbage collection until f returns, by which time f has pinned or held
// it.
func WithLease(ctx context.Context, store any, f func(Lease) error) error {
	l, err := TakeLease(ctx, store)
	if err != nil {
		return err
	}
	defer l.Release(context.WithoutCancel(ctx))
	return f(l)
}
