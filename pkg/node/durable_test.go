package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	ds "github.com/ipfs/go-datastore"
	flatfs "github.com/ipfs/go-ds-flatfs"
	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// The files a pin syncs are the ones flatfs wrote, by a Put or a batch: a
// path that missed them would be skipped as removed, and the blocks left
// in the page cache.
func TestWrittenFlatfsNotesTheFilesItWrote(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blocks")
	ff, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), false)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	w, err := newWrittenFlatfs(ff, dir)
	if err != nil {
		t.Fatal(err)
	}
	one := ds.NewKey("CIQAONE")
	if err := w.Put(ctx, one, []byte("one")); err != nil {
		t.Fatal(err)
	}
	b, err := w.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batched := []ds.Key{ds.NewKey("CIQBTWO"), ds.NewKey("CIQCTHREE")}
	for _, k := range batched {
		if err := b.Put(ctx, k, []byte(k.String())); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.written.Pending(); n != 1 {
		t.Fatalf("%d files noted before the batch's commit, want 1", n)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := w.written.Pending(); n != 3 {
		t.Fatalf("%d files noted, want 3", n)
	}
	for _, k := range append(batched, one) {
		if _, err := os.Stat(w.path(k)); err != nil {
			t.Fatalf("flatfs did not write %s where its files are noted: %v", k, err)
		}
	}
	if err := w.written.Sync(); err != nil {
		t.Fatal(err)
	}
}

// Only new stores are flushed with the whole file system: at every open,
// a syncfs also wrote whatever other programs had left dirty.
func TestOpenFlushesTheFileSystemOnlyForNewStores(t *testing.T) {
	for _, blocks := range []string{"flatfs", "pebble"} {
		t.Run(blocks, func(t *testing.T) {
			home := t.TempDir()
			cfg := config.DefaultConfig()
			cfg.Datastore.Blocks = blocks
			if _, err := config.Init(home, cfg); err != nil {
				t.Fatal(err)
			}
			calls := 0
			syncFS = func(dir string) error { calls++; return durable.SyncFS(dir) }
			defer func() { syncFS = durable.SyncFS }()
			for i, want := range []int{1, 1} {
				n, err := Open(context.Background(), home, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
				if calls != want {
					t.Fatalf("open %d: %d flushes of the file system, want %d", i+1, calls, want)
				}
			}
		})
	}
}
