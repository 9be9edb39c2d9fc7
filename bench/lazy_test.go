package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workload is what the lazy-start benchmark runs in the image's root.
var workload = []string{"/bin/sh", "-c", "cat /etc/os-release"}

// BenchmarkLazyStart is the time from nothing on the node to a shell in
// the Debian image having run a command, with the image's blocks on a peer
// over loopback: shoal mount (files fetched as read) against shoal pull and
// umoci unpack. It reports the bytes the mount fetched.
func BenchmarkLazyStart(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("mounting and chroot need root")
	}
	_, size := imageBlobs(b)
	origin := shoalHome(b, "kubo", "flatfs")
	addr, _ := shoalDaemon(b, origin)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
	fetched := regexp.MustCompile(`fetched ([0-9.]+) MiB`)

	b.Run("shoal/mount", func(b *testing.B) {
		var mib float64
		for b.Loop() {
			b.StopTimer()
			env := shoalHome(b, "kubo", "flatfs")
			mnt := b.TempDir()
			b.StartTimer()
			cmd := exec.Command(shoalBin, "mount", root, mnt, "--peer", addr)
			cmd.Env = append(os.Environ(), env...)
			logs := &strings.Builder{}
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			for !strings.Contains(logs.String(), "mounted ") {
				if cmd.ProcessState != nil {
					b.Fatalf("mount ended: %s", logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			run(b, nil, "chroot", append([]string{mnt}, workload...)...)
			b.StopTimer()
			run(b, env, shoalBin, "unmount", mnt)
			_ = cmd.Wait()
			if m := fetched.FindStringSubmatch(logs.String()); m != nil {
				mib, _ = strconv.ParseFloat(m[1], 64)
			}
			b.StartTimer()
		}
		b.ReportMetric(mib, "fetched-MiB")
		b.ReportMetric(100*mib*(1<<20)/float64(size), "fetched-%")
	})

	b.Run("shoal/pull+unpack", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			env := shoalHome(b, "kubo", "flatfs")
			dir := b.TempDir()
			b.StartTimer()
			run(b, env, shoalBin, "pull", root, "--peer", addr, "--to", "oci:"+filepath.Join(dir, "oci")+":bookworm")
			run(b, nil, "umoci", "unpack", "--image", filepath.Join(dir, "oci")+":bookworm", filepath.Join(dir, "bundle"))
			run(b, nil, "chroot", append([]string{filepath.Join(dir, "bundle", "rootfs")}, workload...)...)
		}
	})
}
