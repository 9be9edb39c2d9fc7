// Package memstore is a store (package store) held in memory, with no
// peers: what is not stored is not found. Blobs are UnixFS files with
// kubo's CIDs, as in every other store, so a consumer's tests see the CIDs
// the node would give.
package memstore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Store is a store in memory. The zero value is not usable; call New.
type Store struct {
	layout blob.Layout
	bs     blockstore.Blockstore
	dag    ipld.DAGService

	mu     sync.Mutex // guards images and holds, and GC against them
	images map[string]catalog.Image
	holds  map[string][]cid.Cid
}

// Every role of package store.
var (
	_ store.Adder      = (*Store)(nil)
	_ store.Reader     = (*Store)(nil)
	_ store.ReaderAt   = (*Store)(nil)
	_ store.Pinner     = (*Store)(nil)
	_ store.Catalog    = (*Store)(nil)
	_ store.Holder     = (*Store)(nil)
	_ store.Collector  = (*Store)(nil)
	_ store.Verifier   = (*Store)(nil)
	_ store.Identifier = (*Store)(nil)
)

// New returns an empty store that adds blobs in kubo's layout.
func New() *Store { return NewWithLayout(blob.Kubo) }

// NewWithLayout returns an empty store that adds blobs in layout l.
func NewWithLayout(l blob.Layout) *Store {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	return &Store{
		layout: l,
		bs:     bs,
		dag:    merkledag.NewDAGService(blockservice.New(bs, nil)),
		images: map[string]catalog.Image{},
		holds:  map[string][]cid.Cid{},
	}
}

// ID names the store; it has no addresses, being on no network.
func (s *Store) ID(context.Context) (store.Identity, error) {
	return store.Identity{ID: "memstore", Addresses: []string{}}, nil
}

func (s *Store) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	return blob.Add(ctx, s.dag, r, s.layout)
}

// AddChunks stores chunks as one UnixFS file, each chunk a block of its
// own (blob.AddChunks), as the node does: a push then builds the same
// layer indexes, and the same root CID, here as on a node.
func (s *Store) AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error) {
	return blob.AddChunks(ctx, s.dag, chunks, s.layout.MaxLinks)
}

func (s *Store) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	r, err := blob.Open(ctx, s.dag, c)
	if err != nil {
		return nil, notFound(c, err)
	}
	return r, nil
}

func (s *Store) ReadBlobAt(ctx context.Context, c cid.Cid, p []byte, off int64) (int, error) {
	n, err := blob.ReadAt(ctx, s.dag, c, p, off)
	return n, notFound(c, err)
}

// notFound marks a missing block as errdefs' not found: with no peers,
// nothing missing ever arrives.
func notFound(c cid.Cid, err error) error {
	if ipld.IsNotFound(err) {
		return fmt.Errorf("blob %s: %w: %w", c, errdefs.ErrNotFound, err)
	}
	return err
}

func (s *Store) PinImage(ctx context.Context, img catalog.Image) error {
	blobs := make([]cid.Cid, 0, len(img.Blobs))
	for _, b := range img.Blobs {
		c, err := cid.Decode(b)
		if err != nil {
			return fmt.Errorf("pin image %s: blob %q: %w", img.CID, b, errdefs.ErrInvalidArgument)
		}
		blobs = append(blobs, c)
	}
	if err := s.allStored(ctx, blobs); err != nil {
		return fmt.Errorf("pin image %s: %w", img.CID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.images[img.CID]; ok {
		img = catalog.Merge(old, img)
	}
	s.images[img.CID] = img
	return nil
}

// allStored checks that each blob's root is stored: a pin or hold of what
// is not here is refused, as the node refuses it.
func (s *Store) allStored(ctx context.Context, blobs []cid.Cid) error {
	for _, c := range blobs {
		if ok, err := s.bs.Has(ctx, c); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("blob %s is not stored: %w", c, errdefs.ErrNotFound)
		}
	}
	return nil
}

func (s *Store) Images(context.Context) ([]catalog.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]catalog.Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, img)
	}
	slices.SortFunc(out, func(a, b catalog.Image) int { return a.Created.Compare(b.Created) })
	return out, nil
}

func (s *Store) Image(_ context.Context, root cid.Cid) (catalog.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, ok := s.images[root.String()]
	if !ok {
		return catalog.Image{}, fmt.Errorf("image %s: %w", root, errdefs.ErrNotFound)
	}
	return img, nil
}

func (s *Store) RemoveImage(_ context.Context, root cid.Cid) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[root.String()]; !ok {
		return fmt.Errorf("image %s: %w", root, errdefs.ErrNotFound)
	}
	delete(s.images, root.String())
	return nil
}

func (s *Store) Hold(ctx context.Context, name string, blobs ...cid.Cid) error {
	if err := s.allStored(ctx, blobs); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds[name] = slices.Clone(blobs)
	return nil
}

func (s *Store) Release(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.holds, name)
	return nil
}

// GC removes every block that no pinned image or hold reaches.
func (s *Store) GC(ctx context.Context) (store.GCResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var roots []cid.Cid
	for _, img := range s.images {
		for _, b := range img.Blobs {
			if c, err := cid.Decode(b); err == nil {
				roots = append(roots, c)
			}
		}
	}
	for _, blobs := range s.holds {
		roots = append(roots, blobs...)
	}
	var res store.GCResult
	// By multihash: the blockstore lists its keys as raw CIDs.
	live := map[string]bool{}
	for _, root := range roots {
		res.Damaged = append(res.Damaged, s.mark(ctx, root, root, live)...)
	}
	keys, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return res, err
	}
	var dead []cid.Cid
	for k := range keys {
		if live[k.Hash().HexString()] {
			res.Kept++
		} else {
			dead = append(dead, k)
		}
	}
	for _, k := range dead {
		if size, err := s.bs.GetSize(ctx, k); err == nil {
			res.Bytes += int64(size)
		}
		if err := s.bs.DeleteBlock(ctx, k); err != nil {
			return res, err
		}
		res.Blocks++
	}
	return res, ctx.Err()
}

// mark adds the blocks under c to live, and reports those it lacks.
func (s *Store) mark(ctx context.Context, blobRoot, c cid.Cid, live map[string]bool) []store.Damage {
	if live[c.Hash().HexString()] {
		return nil
	}
	n, err := s.dag.Get(ctx, c)
	if err != nil {
		return []store.Damage{{Blob: blobRoot.String(), Block: c.String(), Err: err.Error()}}
	}
	live[c.Hash().HexString()] = true
	links, err := blob.Links(n)
	if err != nil {
		return []store.Damage{{Blob: blobRoot.String(), Block: c.String(), Err: err.Error()}}
	}
	var out []store.Damage
	for _, l := range links {
		out = append(out, s.mark(ctx, blobRoot, l, live)...)
	}
	return out
}

// Verify checks every block against its CID and pinned images for
// missing blocks. With no peers a repair can only drop what is corrupt.
func (s *Store) Verify(ctx context.Context, repair bool) (store.VerifyResult, error) {
	var res store.VerifyResult
	keys, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return res, err
	}
	for k := range keys {
		b, err := s.bs.Get(ctx, k)
		if err != nil {
			return res, err
		}
		res.Blocks++
		res.Bytes += int64(len(b.RawData()))
		sum, err := k.Prefix().Sum(b.RawData())
		if err != nil || !sum.Equals(k) {
			res.Corrupt = append(res.Corrupt, k.String())
			if repair {
				if err := s.bs.DeleteBlock(ctx, k); err != nil {
					return res, err
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	live := map[string]bool{}
	for _, img := range s.images {
		for _, b := range img.Blobs {
			if c, err := cid.Decode(b); err == nil {
				res.Missing = append(res.Missing, s.mark(ctx, c, c, live)...)
			}
		}
	}
	return res, ctx.Err()
}

// Blocks counts the blocks stored, for tests that check what a failed
// operation left behind.
func (s *Store) Blocks() int {
	keys, err := s.bs.AllKeysChan(context.Background())
	if err != nil {
		return 0
	}
	count := 0
	for range keys {
		count++
	}
	return count
}
