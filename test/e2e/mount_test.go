package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"golang.org/x/sys/unix"
)

// debianImage is the layout scripts/debian-image.sh caches (tag bookworm).
func debianImage(t *testing.T) string {
	t.Helper()
	return cached(t, "SHOAL_DEBIAN_IMAGE", "debian-bookworm-oci", "index.json", "the Debian test image (scripts/debian-image.sh)")
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

// changedDebian makes a two-layer image: Debian, and a layer that adds,
// deletes and overrides files, with hardlinks, symlinks, setuid and
// setgid files, a sticky directory, xattrs and a file capability. umoci
// writes the second layer, as a build tool would.
func changedDebian(t *testing.T) string {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "oci")
	os.MkdirAll(layout, 0o755)
	copyDir(t, debianImage(t), layout)
	bundle := filepath.Join(t.TempDir(), "bundle")
	runTool(t, "umoci", "unpack", "--image", layout+":bookworm", bundle)
	r := filepath.Join(bundle, "rootfs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(r, "etc/issue.net")))                             // a deleted file
	must(os.RemoveAll(filepath.Join(r, "usr/share/doc/apt")))                      // a deleted directory
	must(os.WriteFile(filepath.Join(r, "etc/hostname"), []byte("shoal\n"), 0o644)) // an overridden file
	must(os.MkdirAll(filepath.Join(r, "opt/app/bin"), 0o755))
	must(os.WriteFile(filepath.Join(r, "opt/app/bin/tool"), bytes.Repeat([]byte("tool "), 300_000), 0o755))
	must(os.Link(filepath.Join(r, "opt/app/bin/tool"), filepath.Join(r, "opt/app/bin/tool-again")))
	must(os.Symlink("../../../etc/os-release", filepath.Join(r, "opt/app/bin/release")))
	must(os.Symlink("loop-b", filepath.Join(r, "opt/app/loop-a")))
	must(os.Symlink("loop-a", filepath.Join(r, "opt/app/loop-b")))
	must(os.WriteFile(filepath.Join(r, "opt/app/bin/suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(filepath.Join(r, "opt/app/bin/suid"), 0, 50))
	must(os.Chmod(filepath.Join(r, "opt/app/bin/suid"), os.ModeSetuid|os.ModeSetgid|0o755))
	must(os.MkdirAll(filepath.Join(r, "opt/app/shared"), 0o777))
	must(os.Chmod(filepath.Join(r, "opt/app/shared"), os.ModeSticky|0o777))
	must(os.Chown(filepath.Join(r, "opt/app/shared"), 1000, 1000))
	must(unix.Setxattr(filepath.Join(r, "opt/app/bin/tool"), "user.shoal", []byte("lazy"), 0))
	netRaw := []byte("\x01\x00\x00\x02\x00\x20\x00\x00" + strings.Repeat("\x00", 12))
	must(unix.Setxattr(filepath.Join(r, "opt/app/bin/suid"), "security.capability", netRaw, 0))
	runTool(t, "umoci", "repack", "--image", layout+":changed", bundle)
	return layout
}

// fileFacts is what the comparison checks of one path.
type fileFacts struct {
	Mode          fs.FileMode
	UID, GID      uint32
	Size          int64
	Mtime         int64 // seconds: tar keeps no more for most entries
	Link, Hash    string
	Rdev          uint64
	Xattrs        string
	HardlinkGroup string // the sorted names sharing the inode, for files with more than one
}

func tree(t *testing.T, root string) map[string]fileFacts {
	t.Helper()
	out := map[string]fileFacts{}
	byInode := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fi, _ := d.Info()
		f := fileFacts{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		switch {
		case fi.Mode().IsRegular():
			f.Size = st.Size
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
			f.Hash = fmt.Sprintf("%x", sha256.Sum256(data))
			if st.Nlink > 1 {
				byInode[st.Ino] = append(byInode[st.Ino], rel)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			f.Link, _ = os.Readlink(p)
		case fi.Mode()&fs.ModeDevice != 0:
			f.Rdev = st.Rdev
		}
		f.Xattrs = xattrs(t, p)
		if rel == "." {
			f.Mtime = 0 // the root's mtime is where it is mounted or unpacked
		}
		out[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range byInode {
		sort.Strings(names)
		for _, n := range names {
			f := out[n]
			f.HardlinkGroup = strings.Join(names, ",")
			out[n] = f
		}
	}
	return out
}

func xattrs(t *testing.T, p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var parts []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Errorf("%s: xattr %s: %v", p, name, err)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", name, v[:k]))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// treeDiffs lists how the tree got differs from want, sorted.
func treeDiffs(want, got map[string]fileFacts) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+p)
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s:\n   mount %+v\n  umoci %+v", p, g, w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "extra "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// TestMountIsTheImageToTheByte: a two-layer Debian image mounted from a
// peer equals the same image unpacked by umoci, in every path, type, mode,
// owner, size, mtime, link target, hardlink group, xattr and file hash.
func TestMountIsTheImageToTheByte(t *testing.T) {
	testenv.FUSE(t)
	testenv.Tool(t, "umoci")
	layout := changedDebian(t)
	a := startShoalDaemon(t)
	out := strings.TrimSpace(a.run(t, "push", "oci:"+layout+":changed"))
	root := out[strings.LastIndex(out, "\n")+1:]

	ref := filepath.Join(t.TempDir(), "ref")
	runTool(t, "umoci", "unpack", "--image", layout+":changed", ref)

	b := &shoalDaemon{bin: a.bin, home: t.TempDir()}
	b.run(t, "init", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen=")
	want := tree(t, filepath.Join(ref, "rootfs"))
	if len(want) < 3000 {
		t.Fatalf("the reference has only %d paths", len(want))
	}
	// Twice: first every byte comes from the peer; then the files read
	// whole (those of 1 MiB and more) come from the file cache's copies.
	var cachedFiles int
	for _, round := range []string{"from the peer", "again, from the file cache"} {
		mnt := t.TempDir()
		cmd := b.command("mount", root, mnt, "--peer", a.Peer)
		logs := testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
			return strings.Contains(logs, "mounted ")
		})
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })

		got := tree(t, mnt)
		if diffs := treeDiffs(want, got); len(diffs) > 0 {
			t.Fatalf("read %s: %d differences between the mount and umoci's unpack, first:\n%s\nmount log:\n%s", round, len(diffs), strings.Join(diffs[:min(len(diffs), 20)], "\n"), logs.String())
		}
		for p, present := range map[string]bool{"opt/app/bin/tool-again": true, "opt/app/shared": true, "etc/issue.net": false, "usr/share/doc/apt": false} {
			if _, ok := got[p]; ok != present {
				t.Errorf("%s in the mount: %v, want %v", p, ok, present)
			}
		}
		t.Logf("read %s: %d paths compared", round, len(want))

		if out, err := exec.Command(b.bin, "unmount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("shoal unmount: %v\n%s", err, out)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("shoal mount after unmount: %v\n%s", err, logs.String())
		}
		counts := regexp.MustCompile(`; (\d+) opens from the file cache, (\d+) files added to it`).FindStringSubmatch(logs.String())
		if counts == nil {
			t.Fatalf("the mount did not report its file cache:\n%s", logs.String())
		}
		opens, _ := strconv.Atoi(counts[1])
		added, _ := strconv.Atoi(counts[2])
		t.Logf("read %s: %d opens from the file cache, %d files added to it", round, opens, added)
		if round == "from the peer" {
			if cachedFiles = added; added == 0 {
				t.Errorf("no file went into the file cache:\n%s", logs.String())
			}
		} else if added != 0 || opens < cachedFiles {
			t.Errorf("the second mount opened %d files from the cache and added %d; want the %d the first one added, from the cache", opens, added, cachedFiles)
		}
	}
}

// TestMountSurvivesAPeerThatVanishes: the only peer holding an image's
// layers dies after the mount; reading a file fails with EIO within the
// read timeout, and listings, stat and the mount itself go on.
func TestMountSurvivesAPeerThatVanishes(t *testing.T) {
	testenv.FUSE(t)
	a := startShoalDaemon(t)
	out := strings.TrimSpace(a.run(t, "push", "oci:"+helloImage(t)+":v1"))
	root := out[strings.LastIndex(out, "\n")+1:]
	b := &shoalDaemon{bin: a.bin, home: t.TempDir()}
	b.run(t, "init", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen=")
	mnt := t.TempDir()
	cmd := b.command("mount", root, mnt, "--peer", a.Peer, "--read-timeout", "3s")
	logs := testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
		return strings.Contains(logs, "mounted ")
	})
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if err := a.proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := os.ReadFile(filepath.Join(mnt, "hello"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading a file no peer can send: %v, want EIO\n%s", err, logs.String())
	}
	t.Logf("EIO after %s", time.Since(start).Round(time.Millisecond))
	if fi, err := os.Stat(filepath.Join(mnt, "hello")); err != nil || fi.Size() == 0 {
		t.Errorf("stat after the failed read: %v", err)
	}
	if entries, err := os.ReadDir(mnt); err != nil || len(entries) != 1 {
		t.Errorf("listing after the failed read: %v %v", entries, err)
	}
	if out, err := exec.Command(b.bin, "unmount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("shoal mount after unmount: %v", err)
	}
	if !regexp.MustCompile(`\([1-9][0-9]* failed\)`).MatchString(logs.String()) {
		t.Errorf("the mount's summary does not count the failed read:\n%s", logs.String())
	}
}

// TestMountThroughADaemonRunsAProgram: with a daemon running on B, shoal
// mount reads through it (ranges of blobs over its socket), and a program
// of the image runs from the mount, its bytes fetched from A.
func TestMountThroughADaemonRunsAProgram(t *testing.T) {
	testenv.FUSE(t)
	a := startShoalDaemon(t)
	out := strings.TrimSpace(a.run(t, "push", "oci:"+helloImage(t)+":v1"))
	root := out[strings.LastIndex(out, "\n")+1:]
	b := startShoalDaemon(t, "--peer", a.Peer)
	mnt := t.TempDir()
	cmd := b.command("mount", root, mnt)
	logs := testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
		return strings.Contains(logs, "mounted ")
	})
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	got, err := exec.Command("chroot", mnt, "/hello").CombinedOutput()
	if err != nil || !strings.Contains(string(got), helloGreeting) {
		t.Fatalf("chroot %s /hello: %v: %s\n%s", mnt, err, got, logs.String())
	}
	if out, err := exec.Command(b.bin, "unmount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	_ = cmd.Wait()
}
