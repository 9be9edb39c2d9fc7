package node

import (
	"context"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/blob"
)

// Cat reads a UnixFS file; online, what is missing is fetched and stored
// as it is read (retrieval.Retriever.Cat says from where).
//
// Blocks it fetches are spared by garbage collection only under a lease
// (image.Leaser) that the caller holds until it has pinned them.
func (n *Node) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	return n.CatHashing(ctx, c, nil)
}

// CatHashing is Cat that also feeds every byte the reader hands out, in
// order, to whole (unless nil), hashing each leaf once where it can.
func (n *Node) CatHashing(ctx context.Context, c cid.Cid, whole *sha256x.Stream) (io.ReadCloser, error) {
	if n.fetch != nil {
		return n.fetch.Cat(ctx, c, whole)
	}
	r, err := blob.Open(ctx, n.dag, c)
	if err != nil || whole == nil {
		return r, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(r, whole), r}, nil
}

// ReadBlobAt reads len(p) bytes of the UnixFS file c from off; online, it
// fetches only the blocks that hold them. It returns io.EOF with fewer
// bytes at the end of the file.
func (n *Node) ReadBlobAt(ctx context.Context, c cid.Cid, p []byte, off int64) (int, error) {
	if n.fetch != nil {
		return n.fetch.ReadAt(ctx, c, p, off)
	}
	return blob.ReadAt(ctx, n.dag, c, p, off)
}

// Fetch makes blocks local, from peers; blocks already here are not asked
// for.
func (n *Node) Fetch(ctx context.Context, blocks []cid.Cid) error {
	if n.fetch == nil {
		return fmt.Errorf("fetch blocks: %w", ErrOffline)
	}
	return n.fetch.Fetch(ctx, blocks)
}
