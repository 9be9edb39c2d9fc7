package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

func openOffline(t *testing.T, home string) *Node {
	t.Helper()
	n, err := Open(context.Background(), home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func addBytes(t *testing.T, n *Node, size int, fill byte) cid.Cid {
	t.Helper()
	data := bytes.Repeat([]byte{fill}, size)
	data[0] = byte(size) // distinct chunks
	c, err := n.Add(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPinsSurviveRestartAndGCFreesOnlyUnpinned(t *testing.T) {
	for _, store := range []string{"flatfs", "pebble"} {
		t.Run(store, func(t *testing.T) { testPinsAndGC(t, store) })
	}
}

func testPinsAndGC(t *testing.T, store string) {
	ctx := context.Background()
	home := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Datastore.Blocks = store
	if _, err := config.Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	shared := addBytes(t, n, 600<<10, 's')
	onlyA := addBytes(t, n, 300<<10, 'a')
	onlyB := addBytes(t, n, 10, 'b')
	loose := addBytes(t, n, 1000, 'x')
	imgA := catalog.Image{CID: onlyA.String(), Source: "test:a", Created: time.Now(), Blobs: []string{onlyA.String(), shared.String()}}
	imgB := catalog.Image{CID: onlyB.String(), Source: "test:b", Created: time.Now(), Blobs: []string{onlyB.String(), shared.String()}}
	for _, img := range []catalog.Image{imgA, imgB} {
		if err := n.PinImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = openOffline(t, home)
	defer n.Close()
	imgs, err := n.Images(ctx)
	if err != nil || len(imgs) != 2 {
		t.Fatalf("images after restart: %v %v", imgs, err)
	}
	res, err := n.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 1 || res.Bytes != 1000 {
		t.Fatalf("first GC removed %d blocks (%d bytes); want only the unpinned one", res.Blocks, res.Bytes)
	}
	has := func(c cid.Cid) bool {
		ok, err := n.Blockstore().Has(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if has(loose) || !has(shared) || !has(onlyA) {
		t.Fatal("GC removed the wrong blocks")
	}

	if err := n.RemoveImage(ctx, onlyA); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if has(onlyA) || !has(shared) || !has(onlyB) {
		t.Fatal("after removing A: its own blob must go, the shared one stay")
	}
	if err := n.RemoveImage(ctx, onlyA); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second remove: %v, want errdefs.ErrNotFound", err)
	}
	if err := n.RemoveImage(ctx, onlyB); err != nil {
		t.Fatal(err)
	}
	res, err = n.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kept != 0 || has(shared) {
		t.Fatalf("after removing every image GC kept %d blocks", res.Kept)
	}
	// Each blob was added as a pack of its leaves; with no leaf left,
	// GC removed the packs too.
	if packs, err := os.ReadDir(filepath.Join(home, "packs")); err != nil || len(packs) != 0 {
		t.Fatalf("after removing every image %d packs are left (%v)", len(packs), err)
	}
}

func TestPinImageRefusesMissingBlobs(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	defer n.Close()
	missing := "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4"
	err := n.PinImage(ctx, catalog.Image{CID: missing, Blobs: []string{missing}})
	if err == nil {
		t.Fatal("pinned an image whose blob is not stored")
	}
	if imgs, _ := n.Images(ctx); len(imgs) != 0 {
		t.Fatalf("a failed pin listed %v", imgs)
	}
}

// An image pinned again from another source keeps the record of where it
// first came from, and names the new source beside it.
func TestPinAgainKeepsTheFirstSource(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	if _, err := config.Init(home, config.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	n := openOffline(t, home)
	defer n.Close()
	c := addBytes(t, n, 1000, 'r')
	first := catalog.Image{CID: c.String(), Source: "oci:/layout:v1", Created: time.Now().Add(-time.Hour).UTC(), Blobs: []string{c.String()}}
	if err := n.PinImage(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := n.PinImage(ctx, catalog.Image{CID: c.String(), Source: "registry 127.0.0.1:5050/team/app:1", Created: time.Now().UTC(), Blobs: []string{c.String()}}); err != nil {
		t.Fatal(err)
	}
	img, err := n.Image(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if img.Source != first.Source || !img.Created.Equal(first.Created) || len(img.Also) != 1 || img.Also[0] != "registry 127.0.0.1:5050/team/app:1" {
		t.Fatalf("record after a second pin: %+v", img)
	}
}
