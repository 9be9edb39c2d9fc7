// Package storetest is the conformance suite of package store: what every
// backend (the embedded node, a daemon's client, kubo, the in-memory
// store) must do alike. A backend's tests call Run with a function that
// opens a new, empty store; the suite runs the checks of every role the
// store implements.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// Store is what every backend implements; the other roles are checked
// where a backend has them.
type Store interface {
	store.Adder
	store.Reader
	store.Pinner
	store.Catalog
}

// Run runs the suite against the stores open returns, one for each check;
// open registers their cleanup with t.
func Run(t *testing.T, open func(t *testing.T) Store) {
	t.Run("AddThenCat", func(t *testing.T) { addThenCat(t, open(t)) })
	t.Run("ReadAt", func(t *testing.T) {
		s := open(t)
		if _, ok := s.(store.ReaderAt); !ok {
			t.Skip("not a store.ReaderAt")
		}
		readAt(t, s)
	})
	t.Run("Catalog", func(t *testing.T) { catalogOf(t, open(t)) })
	t.Run("GC", func(t *testing.T) {
		s := open(t)
		if _, ok := s.(store.Collector); !ok {
			t.Skip("not a store.Collector")
		}
		gc(t, s)
	})
	t.Run("Verify", func(t *testing.T) {
		s := open(t)
		if _, ok := s.(store.Verifier); !ok {
			t.Skip("not a store.Verifier")
		}
		verify(t, s)
	})
	t.Run("AddChunks", func(t *testing.T) {
		s := open(t)
		ca, ok := s.(chunkAdder)
		if !ok {
			t.Skip("adds no chunks")
		}
		addChunks(t, s, ca)
	})
	t.Run("ID", func(t *testing.T) {
		s := open(t)
		ider, ok := s.(store.Identifier)
		if !ok {
			t.Skip("not a store.Identifier")
		}
		id, err := ider.ID(ctxFor(t))
		if err != nil || id.ID == "" {
			t.Fatalf("ID: %+v, %v", id, err)
		}
	})
}

// sizes cross the boundaries of kubo's layout: one block, one chunk and a
// byte, and a tree of two levels.
var sizes = []int{0, 1, 256 << 10, 256<<10 + 1, 175 * 256 << 10}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func data(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// kuboCID is the CID kubo's `ipfs add --cid-version=1` gives b: the
// in-memory store's, whose layout is kubo's (checked against kubo's own
// vectors in pkg/blob).
func kuboCID(t *testing.T, b []byte) cid.Cid {
	t.Helper()
	c, err := memstore.New().Add(context.Background(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func add(t *testing.T, s Store, b []byte) cid.Cid {
	t.Helper()
	c, err := s.Add(ctxFor(t), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Add of %d bytes: %v", len(b), err)
	}
	return c
}

func cat(t *testing.T, s Store, c cid.Cid) []byte {
	t.Helper()
	rc, err := s.Cat(ctxFor(t), c)
	if err != nil {
		t.Fatalf("Cat %s: %v", c, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Cat %s: %v", c, err)
	}
	return got
}

// Add stores a blob under kubo's CID, and Cat gives its bytes back.
func addThenCat(t *testing.T, s Store) {
	for i, n := range sizes {
		b := data(int64(i), n)
		c := add(t, s, b)
		if want := kuboCID(t, b); c != want {
			t.Errorf("%d bytes added as %s, kubo's CID is %s", n, c, want)
		}
		if got := cat(t, s, c); !bytes.Equal(got, b) {
			t.Errorf("%d bytes added, %d read back, equal: %v", n, len(got), bytes.Equal(got, b))
		}
	}
}

// chunkAdder is a store that stores chunks as one file whose leaves are
// the chunks (image.ChunkAdder): a push's layer indexes, and so its root
// CID, are built so where a store can, inlined where it cannot.
type chunkAdder interface {
	AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error)
}

// AddChunks gives the CID blob.AddChunks gives in kubo's layout, and the
// chunks back, in order, as one blob.
func addChunks(t *testing.T, s Store, ca chunkAdder) {
	ctx := ctxFor(t)
	chunks := [][]byte{data(1, 100), data(2, 32<<10), data(3, 1), data(4, 200<<10)}
	dag := merkledag.NewDAGService(blockservice.New(blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore())), nil))
	want, err := blob.AddChunks(ctx, dag, blob.ChunkSlice(chunks), blob.Kubo.MaxLinks)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.AddChunks(ctx, blob.ChunkSlice(chunks))
	if err != nil {
		t.Fatalf("AddChunks: %v", err)
	}
	if got != want {
		t.Errorf("chunks added as %s, blob.AddChunks gives %s", got, want)
	}
	if back := cat(t, s, got); !bytes.Equal(back, bytes.Join(chunks, nil)) {
		t.Errorf("chunks added, %d bytes read back, not the chunks in order", len(back))
	}
}

// ReadBlobAt reads any range; at the end, fewer bytes and io.EOF.
func readAt(t *testing.T, s Store) {
	ra := s.(store.ReaderAt)
	b := data(7, 3*256<<10+100)
	c := add(t, s, b)
	for _, r := range []struct{ off, n int }{{0, 10}, {256<<10 - 5, 10}, {100, 2 * 256 << 10}, {len(b) - 50, 50}} {
		p := make([]byte, r.n)
		k, err := ra.ReadBlobAt(ctxFor(t), c, p, int64(r.off))
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("ReadBlobAt(%d, %d): %v", r.off, r.n, err)
		}
		if k != r.n || !bytes.Equal(p[:k], b[r.off:r.off+r.n]) {
			t.Fatalf("ReadBlobAt(%d, %d): %d bytes, equal %v", r.off, r.n, k, bytes.Equal(p[:k], b[r.off:r.off+k]))
		}
	}
	p := make([]byte, 100)
	k, err := ra.ReadBlobAt(ctxFor(t), c, p, int64(len(b)-40))
	if k != 40 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:k], b[len(b)-40:]) {
		t.Fatalf("ReadBlobAt past the end: %d bytes, %v; want 40 and io.EOF", k, err)
	}
}

func image(t *testing.T, s Store, seed int64, source string) (catalog.Image, cid.Cid) {
	t.Helper()
	blobs := []string{add(t, s, data(seed, 1000)).String(), add(t, s, data(seed+1, 300<<10)).String()}
	root := add(t, s, []byte(`{"root":"`+blobs[0]+`"}`))
	img := catalog.Image{
		CID: root.String(), Source: source, Platforms: []string{"linux/amd64"}, Size: 1000 + 300<<10,
		Created: time.Now().UTC().Truncate(time.Second), Blobs: append([]string{root.String()}, blobs...),
	}
	return img, root
}

// Images are listed once pinned; a second pin keeps where the image first
// came from; an image removed, or never pinned, is errdefs.ErrNotFound.
func catalogOf(t *testing.T, s Store) {
	ctx := ctxFor(t)
	_, never := image(t, s, 100, "oci:never")
	if _, err := s.Image(ctx, never); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Image of an image never pinned: %v, want errdefs.ErrNotFound", err)
	}
	img, root := image(t, s, 200, "oci:first")
	if err := s.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, err := s.Image(ctx, root)
	if err != nil || got.CID != img.CID || got.Source != img.Source || got.Size != img.Size ||
		!slices.Equal(got.Platforms, img.Platforms) || !slices.Equal(got.Blobs, img.Blobs) || !got.Created.Equal(img.Created) {
		t.Fatalf("Image after PinImage: %+v, %v; pinned %+v", got, err, img)
	}
	again := img
	again.Source, again.Created = "docker://second", img.Created.Add(time.Hour)
	if err := s.PinImage(ctx, again); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Image(ctx, root); err != nil || got.Source != img.Source || !slices.Contains(got.Also, again.Source) {
		t.Fatalf("Image after a second pin: %+v, %v; want source %s, also %s", got, err, img.Source, again.Source)
	}
	imgs, err := s.Images(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].CID != img.CID {
		t.Fatalf("Images: %+v, %v", imgs, err)
	}
	if err := s.RemoveImage(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Image(ctx, root); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Image of an image removed: %v, want errdefs.ErrNotFound", err)
	}
	if err := s.RemoveImage(ctx, root); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("RemoveImage of an image removed: %v, want errdefs.ErrNotFound", err)
	}
	if imgs, err := s.Images(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("Images after the removal: %+v, %v", imgs, err)
	}
}

// A collection keeps what pinned images and holds (of a store.Holder)
// reach and removes the rest; a released hold, or a removed image, is
// collected next time.
func gc(t *testing.T, s Store) {
	ctx := ctxFor(t)
	c := s.(store.Collector)
	h, holds := s.(store.Holder)
	img, root := image(t, s, 300, "oci:kept")
	if err := s.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	held := data(310, 600<<10)
	heldCID := add(t, s, held)
	if holds {
		if err := h.Hold(ctx, "conformance", heldCID); err != nil {
			t.Fatal(err)
		}
	}
	add(t, s, data(320, 500<<10)) // nothing keeps it
	res, err := c.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks == 0 || len(res.Damaged) != 0 {
		t.Fatalf("GC with a loose blob: %+v", res)
	}
	for _, b := range img.Blobs {
		bc, _ := cid.Decode(b)
		cat(t, s, bc)
	}
	if holds {
		if got := cat(t, s, heldCID); !bytes.Equal(got, held) {
			t.Fatal("a held blob changed across a GC")
		}
	}
	if res, err := c.GC(ctx); err != nil || res.Blocks != 0 {
		t.Fatalf("a second GC with nothing loose: %+v, %v", res, err)
	}
	if holds {
		if err := h.Release(ctx, "conformance"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveImage(ctx, root); err != nil {
		t.Fatal(err)
	}
	res, err = c.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The image's 5 blocks (a root, a small blob, a blob of two chunks
	// and its node), and the held blob's 4 (three chunks and their node).
	want := 5
	if holds {
		want += 4
	}
	if res.Blocks < want {
		t.Fatalf("GC after a release and a removal freed %d blocks, want at least %d: %+v", res.Blocks, want, res)
	}
}

// A store that was only written through its API is whole.
func verify(t *testing.T, s Store) {
	ctx := ctxFor(t)
	img, _ := image(t, s, 400, "oci:verified")
	if err := s.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	res, err := s.(store.Verifier).Verify(ctx, false)
	if errors.Is(err, errdefs.ErrNotImplemented) {
		t.Logf("the backend leaves verification to its own tools: %v", err)
		return
	}
	if err != nil || !res.OK() || res.Blocks == 0 {
		t.Fatalf("Verify: %+v, %v", res, err)
	}
}
