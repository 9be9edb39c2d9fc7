package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ScratchFS mounts a new ext4 file system of its own, so that what the
// disk is asked to do can be counted (the loop device's statistics)
// without anything else on the machine writing there.
func ScratchFS(tb testing.TB) (dir string, disk Disk) {
	tb.Helper()
	Root(tb)
	mkfs := Tool(tb, "mkfs.ext4")
	img := filepath.Join(tb.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		tb.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir = tb.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		Need(tb, "mounting a loop device", fmt.Errorf("%v: %s", err, out))
	}
	tb.Cleanup(func() { exec.Command("umount", dir).Run() })
	dev, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "--mountpoint", dir).Output()
	if err != nil {
		tb.Fatalf("findmnt %s: %v", dir, err)
	}
	return dir, Disk{tb: tb, stat: filepath.Join("/sys/block", filepath.Base(strings.TrimSpace(string(dev))), "stat")}
}

// Disk reads a scratch file system's disk statistics.
type Disk struct {
	tb   testing.TB
	stat string
}

// Written is how many bytes the disk has been asked to write.
func (d Disk) Written() int64 { return d.field(6, "write sectors") * 512 }

// Flushes is how many times the disk has been asked to flush its cache.
func (d Disk) Flushes() int64 { return d.field(15, "flush requests") }

// field reads the i-th number of the block device's stat file
// (Documentation/block/stat.rst).
func (d Disk) field(i int, name string) int64 {
	d.tb.Helper()
	data, err := os.ReadFile(d.stat)
	if err != nil {
		d.tb.Fatal(err)
	}
	f := strings.Fields(string(data))
	if len(f) <= i {
		d.tb.Fatalf("%s has no %s: %q", d.stat, name, data)
	}
	n, err := strconv.ParseInt(f[i], 10, 64)
	if err != nil {
		d.tb.Fatalf("%s: %q", d.stat, data)
	}
	return n
}
