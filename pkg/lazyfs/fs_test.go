package lazyfs

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMountServesMetadataAndBytes(t *testing.T) {
	testenv.FUSE(t)
	mtime := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	// cap_net_raw+ep, as Debian's ping carries: the kernel checks the format.
	netRaw := "\x01\x00\x00\x02\x00\x20\x00\x00" + strings.Repeat("\x00", 12)
	layer := memLayer{
		dir("bin/"),
		{Name: "bin/su", Type: tar.TypeReg, Mode: 0o4755, UID: 0, GID: 0, Size: 6, ModTime: mtime,
			Xattrs: map[string]string{"security.capability": netRaw, "user.k": "v"}},
		{Name: "bin/sh", Type: tar.TypeSymlink, Linkname: "su", Mode: 0o777, ModTime: mtime},
		link("bin/su2", "bin/su"),
		{Name: "home/u/f", Type: tar.TypeReg, Mode: 0o640, UID: 1000, GID: 100, Size: 8, ModTime: mtime},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime},
	}
	dirPath := t.TempDir()
	srv, err := Mount(dirPath, Merge([]Layer{layer}), MountOptions{Name: "shoal:test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	data, err := os.ReadFile(filepath.Join(dirPath, "home/u/f"))
	if err != nil || string(data) != "home/u/f" {
		t.Fatalf("read: %q %v", data, err)
	}
	var st, st2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(dirPath, "bin/su"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o4755 || st.Nlink != 2 || st.Mtim.Sec != mtime.Unix() {
		t.Errorf("bin/su: mode %o nlink %d mtime %d", st.Mode, st.Nlink, st.Mtim.Sec)
	}
	unix.Lstat(filepath.Join(dirPath, "bin/su2"), &st2)
	if st.Ino != st2.Ino {
		t.Errorf("hardlinks have inodes %d and %d", st.Ino, st2.Ino)
	}
	unix.Lstat(filepath.Join(dirPath, "home/u/f"), &st)
	if st.Uid != 1000 || st.Gid != 100 || st.Mode&0o7777 != 0o640 {
		t.Errorf("home/u/f: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	unix.Lstat(filepath.Join(dirPath, "dev/null"), &st)
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if target, err := os.Readlink(filepath.Join(dirPath, "bin/sh")); err != nil || target != "su" {
		t.Errorf("readlink: %q %v", target, err)
	}
	buf := make([]byte, 64)
	for name, want := range map[string]string{"security.capability": netRaw, "user.k": "v"} {
		n, err := unix.Lgetxattr(filepath.Join(dirPath, "bin/su"), name, buf)
		if err != nil || string(buf[:max(n, 0)]) != want {
			t.Errorf("xattr %s: %q %v", name, buf[:max(n, 0)], err)
		}
	}
	if err := os.WriteFile(filepath.Join(dirPath, "home/u/f"), []byte("x"), 0o644); err == nil {
		t.Error("a write to the read-only mount succeeded")
	}
}
