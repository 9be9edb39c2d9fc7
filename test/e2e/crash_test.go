package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
)

// listedImages is the CIDs `shoal images` lists.
func (d *shoalDaemon) listedImages(t *testing.T) map[string]bool {
	t.Helper()
	var imgs []struct{ CID string }
	if err := json.Unmarshal([]byte(d.run(t, "images", "--json")), &imgs); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, i := range imgs {
		out[i.CID] = true
	}
	return out
}

// kill stops the daemon as a crash would: SIGKILL, nothing flushed.
func (d *shoalDaemon) kill(t *testing.T) {
	t.Helper()
	d.proc.Process.Signal(syscall.SIGKILL)
	d.proc.Wait()
}

// checkWhole verifies the daemon's store (repairing what is corrupt or
// missing and not pinned) and pulls every listed image into an OCI
// layout, which checks every blob against its digest.
func (d *shoalDaemon) checkWhole(t *testing.T, images map[string]bool) {
	t.Helper()
	cmd := d.command("verify", "--repair")
	out, err := cmd.CombinedOutput()
	t.Logf("verify --repair: %s", strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the store is not whole after the crash: %v", err)
	}
	if out := d.run(t, "verify"); !strings.Contains(out, "0 corrupt, 0 missing") {
		t.Fatalf("verify after repair: %s", out)
	}
	for root := range images {
		dst := t.TempDir()
		d.run(t, "pull", root, "--to", "oci:"+dst+":v1", "--timeout", "10s")
		testimage.Validate(t, dst)
	}
}

// TestPowerCutKeepsEveryPinnedImageWhole: the store lives on ext4 on a
// loop device. An image is pushed, a second push is under way, and the
// machine loses power: the daemon is killed and the disk keeps only what
// reached it (the loop device's backing file, copied at once: the page
// cache's unwritten pages are what a power cut loses). On the disk as
// left, after ext4's journal replay, the daemon starts, the first image
// is listed and whole, nothing corrupt is served, and the store verifies.
func TestPowerCutKeepsEveryPinnedImageWhole(t *testing.T) {
	testenv.Root(t)
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		testenv.Tool(t, tool)
	}
	scratch := t.TempDir()
	disk := filepath.Join(scratch, "disk.img")
	cut := filepath.Join(scratch, "cut.img")
	mnt, err := os.MkdirTemp("", "shoal-cut-") // short: the home holds sockets
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(mnt) })
	mustRun(t, "truncate", "-s", "2G", disk)
	mustRun(t, "mkfs.ext4", "-q", "-F", disk)
	mountLoop(t, disk, mnt)

	home := filepath.Join(mnt, "home")
	d := newShoalHomeAt(t, home, "/ip4/127.0.0.1/tcp/0", nil)
	d.start(t)
	first := lastLine(d.run(t, "push", "oci:"+debianImage(t)+":bookworm"))

	second := testimage.IndexLayout(t, 91, 60<<20, 20<<20)
	push := d.command("push", "oci:"+second+":v1")
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the second push is writing
	d.kill(t)
	mustRun(t, "cp", "--sparse=always", disk, cut)
	push.Process.Kill()
	push.Wait()
	unmountLoop(t, mnt)

	mountLoop(t, cut, mnt)
	d.start(t)
	images := d.listedImages(t)
	if !images[first] {
		t.Fatalf("the image pushed before the power cut is not listed: %v", images)
	}
	d.checkWhole(t, images)
	t.Logf("after the cut: %d images listed, the first whole", len(images))
}

// TestKillNineMidPushAndMidPull: a daemon killed while a push and a pull
// are under way starts again on the same home; what was pinned before is
// whole, the store verifies, and the same push and pull then succeed.
func TestKillNineMidPushAndMidPull(t *testing.T) {
	holder := startShoalDaemon(t)
	big := testimage.IndexLayout(t, 92, 80<<20, 30<<20)
	root := lastLine(holder.run(t, "push", "oci:"+big+":v1"))

	d := startShoalDaemon(t)
	small := testimage.IndexLayout(t, 93, 2<<20, 100<<10)
	kept := lastLine(d.run(t, "push", "oci:"+small+":v1"))

	push := d.command("push", "oci:"+testimage.IndexLayout(t, 94, 70<<20)+":v1")
	pull := d.command("pull", root, "--peer", holder.Peer, "--to", "oci:"+t.TempDir()+":v1")
	for _, c := range []*exec.Cmd{push, pull} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	d.kill(t)
	push.Wait()
	pull.Wait()

	d.start(t)
	images := d.listedImages(t)
	if !images[kept] {
		t.Fatalf("the image pushed before the kill is not listed: %v", images)
	}
	d.checkWhole(t, map[string]bool{kept: true})
	dst := t.TempDir()
	d.run(t, "pull", root, "--peer", holder.Peer, "--to", "oci:"+dst+":v1")
	testimage.Validate(t, dst)
	d.run(t, "push", "oci:"+big+":v1")
	if out := d.run(t, "verify"); !strings.Contains(out, "0 corrupt, 0 missing") {
		t.Fatalf("verify after the pull and push: %s", out)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// mountLoop mounts the ext4 image file at dir on a loop device, until the
// test ends or unmountLoop.
func mountLoop(t *testing.T, file, dir string) {
	t.Helper()
	mustRun(t, "mount", "-o", "loop", file, dir)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
}

func unmountLoop(t *testing.T, dir string) {
	t.Helper()
	mustRun(t, "umount", dir)
}
