package durable_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/internal/testenv"
)

// scratchFS mounts a new ext4 file system of its own, so that what the
// disk is asked to write can be counted (the loop device's statistics)
// without anything else on the machine writing there.
func scratchFS(t *testing.T) (dir string, written func() int64) {
	t.Helper()
	testenv.Root(t)
	mkfs := testenv.Tool(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir = t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		testenv.Need(t, "mounting a loop device", fmt.Errorf("%v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	dev, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "--mountpoint", dir).Output()
	if err != nil {
		t.Fatalf("findmnt %s: %v", dir, err)
	}
	stat := filepath.Join("/sys/block", filepath.Base(strings.TrimSpace(string(dev))), "stat")
	return dir, func() int64 {
		data, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		sectors, err := strconv.ParseInt(f[6], 10, 64)
		if err != nil {
			t.Fatalf("%s: %q", stat, data)
		}
		return sectors * 512
	}
}

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
	dir, written := scratchFS(t)
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

	before := written()
	if err := files.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := written() - before; got < noted || got >= other {
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
	before = written()
	if err := files.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := written() - before; got < other {
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
