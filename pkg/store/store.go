// Package store is the one contract for where shoal keeps content: the
// embedded IPFS node (package node), a client of a running daemon (package
// daemon) and a client of a kubo node (package kubo) all implement it.
//
// A store is built from small roles, each one or two methods, and every
// consumer names the roles it needs: conversion needs an Adder, a Reader
// and a Pinner (image.Store), a mount adds a ReaderAt (lazyfs.Store), the
// registry and the mirror add a Catalog and a Holder. Compile-time
// assertions beside each backend say which roles it implements.
//
// The lifecycle of content, stated once here for all of them:
//
//   - Add stores a blob as a UnixFS file with kubo's CIDs and returns its
//     CID. What is added is not kept: a collection (Collector) removes
//     every block that no pinned image, hold or lease reaches.
//   - Cat and ReadBlobAt read a blob, fetching from peers what is not
//     stored yet, and store what they fetch, verified against its CIDs.
//   - PinImage keeps an image's blobs and records it in the catalog; a
//     second pin of the same root keeps where it first came from
//     (catalog.Merge). RemoveImage unpins what no other image names.
//   - Hold keeps blobs under a name until Release, outside the catalog:
//     the registry's uploads, the mirror's blobs, a mounted layer's index.
//     Holding a name again replaces what it held.
package store

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
)

// Adder stores a blob and returns its CID.
type Adder interface {
	Add(ctx context.Context, r io.Reader) (cid.Cid, error)
}

// Reader reads a blob whole, fetching from peers what is not stored yet
// and storing it, so that the blob can be pinned once read.
type Reader interface {
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
}

// ReaderAt reads part of a blob, fetching only the blocks it needs. At the
// blob's end it returns fewer bytes than asked for and io.EOF.
type ReaderAt interface {
	ReadBlobAt(ctx context.Context, c cid.Cid, p []byte, off int64) (int, error)
}

// BlobAt is blob c of r as an io.ReaderAt, whose reads are bound to ctx.
func BlobAt(ctx context.Context, r ReaderAt, c cid.Cid) io.ReaderAt {
	return blobAt{ctx: ctx, r: r, c: c}
}

type blobAt struct {
	ctx context.Context
	r   ReaderAt
	c   cid.Cid
}

func (b blobAt) ReadAt(p []byte, off int64) (int, error) { return b.r.ReadBlobAt(b.ctx, b.c, p, off) }

// Pinner keeps an image's blobs and records the image.
type Pinner interface {
	PinImage(ctx context.Context, img catalog.Image) error
}

// Catalog lists the images pinned and removes them. An image that is not
// pinned is an error wrapping errdefs.ErrNotFound.
type Catalog interface {
	Images(ctx context.Context) ([]catalog.Image, error)
	Image(ctx context.Context, root cid.Cid) (catalog.Image, error)
	RemoveImage(ctx context.Context, root cid.Cid) error
}

// Holder keeps blobs under a name, outside the catalog, until released.
type Holder interface {
	Hold(ctx context.Context, name string, blobs ...cid.Cid) error
	Release(ctx context.Context, name string) error
}

// Collector removes every block that nothing keeps.
type Collector interface {
	GC(ctx context.Context) (GCResult, error)
}

// Verifier checks the stored blocks against their CIDs, and pinned blobs
// for missing blocks; repair drops the corrupt and fetches again.
type Verifier interface {
	Verify(ctx context.Context, repair bool) (VerifyResult, error)
}

// Identifier says who a node is and where it listens.
type Identifier interface {
	ID(ctx context.Context) (Identity, error)
}

// GCResult says what a garbage collection freed.
type GCResult struct {
	Blocks int   // blocks removed
	Bytes  int64 // their size
	Kept   int   // blocks still referenced by a pin, a hold or a lease
	// Damaged lists blocks of pinned blobs that are missing or were found
	// corrupt (and dropped): those blobs are incomplete until fetched
	// again (`shoal verify --repair`). Their other blocks are kept.
	Damaged []Damage `json:",omitempty"`
	// Spared is set when a damaged blob's blocks could not be told apart
	// from garbage, so that this collection deleted no loose block.
	Spared bool `json:",omitempty"`
}

// Damage is a block a pinned blob needs that the store cannot read.
type Damage struct {
	Blob  string // the pinned blob's CID
	Block string // the block's CID
	Err   string
}

// VerifyResult says what a check of the store found.
type VerifyResult struct {
	Blocks int   // blocks checked
	Bytes  int64 // their size
	// Corrupt are blocks whose bytes do not hash to their CID. A repair
	// drops them.
	Corrupt []string `json:",omitempty"`
	// Missing are blocks that pinned blobs need and the store lacks (after
	// a repair, those no peer sent).
	Missing []Damage `json:",omitempty"`
	// Fetched counts the missing blocks a repair fetched again from peers.
	Fetched int `json:",omitempty"`
}

// OK reports whether the store is whole and sound.
func (r VerifyResult) OK() bool { return len(r.Corrupt) == 0 && len(r.Missing) == 0 }

// Identity is what `shoal id` prints, with kubo's field names.
type Identity struct {
	ID        string
	Addresses []string
	// Registry is the address of the daemon's OCI registry, if it serves one.
	Registry string `json:",omitempty"`
	// Containerd is the socket of the daemon's containerd plugins (the
	// snapshotter), if it serves them.
	Containerd string `json:",omitempty"`
	// Group is the group the daemon is a member of, if any.
	Group string `json:",omitempty"`
	// Listen, on a node that is not online (no daemon runs), are the swarm
	// addresses `shoal daemon` would listen on ([swarm] listen), with
	// /p2p/ID: what to give other nodes once it runs.
	Listen []string `json:",omitempty"`
}
