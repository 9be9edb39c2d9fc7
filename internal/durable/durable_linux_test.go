package durable_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/internal/testenv"
)

func writeFile(t *testing.T, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A sync writes the files noted, not the other dirty files of the file
// system; past MaxFiles it syncs the whole file system.
func TestSyncWritesTheFilesNotedOnly(t *testing.T) {
	dir, disk := testenv.ScratchFS(t)
	root := filepath.Join(dir, "store")
	const noted, other = 8 << 20, 32 << 20
	writeFile(t, filepath.Join(dir, "spool", "other"), other)
	files := durable.NewFiles(root)
	writeFile(t, filepath.Join(root, "ab", "block"), noted)
	files.Wrote(filepath.Join(root, "ab", "block"))
	// Removed after it was noted: nothing of it to keep.
	writeFile(t, filepath.Join(root, "gone"), 4096)
	files.Wrote(filepath.Join(root, "gone"))
	os.Remove(filepath.Join(root, "gone"))

	before := disk.Written()
	if err := files.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := disk.Written() - before; got < noted || got >= other {
		t.Fatalf("the sync wrote %d bytes: want the noted file's %d, not the other's %d", got, noted, other)
	}
	if n := files.Pending(); n != 0 {
		t.Fatalf("%d files still pending after the sync", n)
	}

	for i := range durable.MaxFiles + 1 {
		p := filepath.Join(root, "many", strconv.Itoa(i))
		writeFile(t, p, 1)
		files.Wrote(p)
	}
	before = disk.Written()
	if err := files.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := disk.Written() - before; got < other {
		t.Fatalf("a sync of %d files wrote %d bytes: want the file system's (%d and more)", durable.MaxFiles+1, got, other)
	}
}

// A file that cannot be synced fails the sync and stays noted for the next.
func TestSyncFailureKeepsTheFileNoted(t *testing.T) {
	root := t.TempDir()
	notADir := filepath.Join(root, "file")
	writeFile(t, notADir, 1)
	files := durable.NewFiles(root)
	files.Wrote(filepath.Join(notADir, "below"))
	if err := files.Sync(); err == nil {
		t.Fatal("a sync of a path below a file succeeded")
	}
	if n := files.Pending(); n != 1 {
		t.Fatalf("%d files pending after a failed sync, want 1", n)
	}
}

// A flush that failed outside Sync fails the next Sync, once: the kernel
// would not report it again.
func TestFailedFlushFailsTheNextSync(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "pack")
	writeFile(t, path, 1)
	files := durable.NewFiles(root)
	lost := errors.New("write-back failed")
	files.Failed(path, lost)
	if err := files.Sync(); !errors.Is(err, lost) {
		t.Fatalf("sync after a failed flush: %v, want %v", err, lost)
	}
	if n := files.Pending(); n != 1 {
		t.Fatalf("%d files pending after a failed sync, want 1", n)
	}
	if err := files.Sync(); err != nil {
		t.Fatalf("the retried sync: %v", err)
	}
}
