package bench

import (
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"golang.org/x/sys/unix"
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
	lazyStart(b, origin, root, addr, nil, size)
}

// BenchmarkLazyStartPython is BenchmarkLazyStart on a bigger image, Debian
// with python3 (scripts/debian-image.sh python), running a python3 hello
// world.
func BenchmarkLazyStartPython(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("mounting and chroot need root")
	}
	image := pythonImage(b)
	origin := shoalHome(b, "kubo", "flatfs")
	addr, _ := shoalDaemon(b, origin)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+image+":bookworm"))
	lazyStart(b, origin, root, addr, nil, layoutSize(b, image), pythonHello...)
}

// pythonHello is the python3 image's workload.
var pythonHello = []string{"/usr/bin/python3", "-c", "print('hello from python')"}

// pythonImage is the layout of the Debian image with python3, which
// scripts/bench.sh builds.
func pythonImage(b *testing.B) string {
	b.Helper()
	image := os.Getenv("SHOAL_BENCH_PYTHON_IMAGE")
	if image == "" {
		b.Skip("set SHOAL_BENCH_PYTHON_IMAGE (scripts/bench.sh does)")
	}
	return image
}

// lazyStart measures, from an empty node, shoal mount then the workload in
// the mount against shoal pull, umoci unpack, then the workload, with the
// image root's blocks on peer addr, whose home is originEnv. The workload
// is the package's unless given.
func lazyStart(b *testing.B, originEnv []string, root, addr string, host *testbed.Host, size int64, command ...string) {
	workload := workload
	if len(command) > 0 {
		workload = command
	}
	// What the mount read (spans, windows, indexes), and what came from
	// the peer: whole 256 KiB blocks of the layer.
	fetched := regexp.MustCompile(`fetched ([0-9.]+) MiB`)
	fromPeers := regexp.MustCompile(`([0-9.]+) MiB came from peers`)
	mountAndRun := func(b *testing.B, root string) {
		var mib, peerMiB float64
		for b.Loop() {
			b.StopTimer()
			env := shoalHome(b, "kubo", "flatfs")
			mnt := b.TempDir()
			b.StartTimer()
			logs, unmount := startMount(b, env, host, root, mnt, addr)
			run(b, nil, "chroot", append([]string{mnt}, workload...)...)
			b.StopTimer()
			unmount()
			if m := fetched.FindStringSubmatch(logs.String()); m != nil {
				mib, _ = strconv.ParseFloat(m[1], 64)
			}
			if m := fromPeers.FindStringSubmatch(logs.String()); m != nil {
				peerMiB, _ = strconv.ParseFloat(m[1], 64)
			}
			b.StartTimer()
		}
		b.ReportMetric(mib, "fetched-MiB")
		b.ReportMetric(100*mib*(1<<20)/float64(size), "fetched-%")
		b.ReportMetric(peerMiB, "peers-MiB")
		b.ReportMetric(100*peerMiB*(1<<20)/float64(size), "peers-%")
	}
	b.Run("shoal/mount", func(b *testing.B) { mountAndRun(b, root) })
	// The same start from the image with the workload's reads recorded
	// and attached (shoal mount --record, shoal index --prefetch): the
	// mount fetches the listed spans at once instead of one miss at a time.
	b.Run("shoal/mount+prefetch", func(b *testing.B) {
		list := filepath.Join(scratchDir(b), "reads.json")
		env := shoalHome(b, "kubo", "flatfs")
		mnt := b.TempDir()
		_, unmount := startMount(b, env, host, root, mnt, addr, "--record", list)
		run(b, nil, "chroot", append([]string{mnt}, workload...)...)
		unmount()
		withList := lastLine(output(b, originEnv, shoalBin, "index", root, "--prefetch", list))
		mountAndRun(b, withList)
	})
	b.Run("shoal/pull+unpack", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			env := shoalHome(b, "kubo", "flatfs")
			dir := b.TempDir()
			b.StartTimer()
			pull := argv(host, shoalBin, "pull", root, "--peer", addr, "--to", "oci:"+filepath.Join(dir, "oci")+":bookworm")
			run(b, env, pull[0], pull[1:]...)
			run(b, nil, "umoci", "unpack", "--image", filepath.Join(dir, "oci")+":bookworm", filepath.Join(dir, "bundle"))
			run(b, nil, "chroot", append([]string{filepath.Join(dir, "bundle", "rootfs")}, workload...)...)
		}
	})
}

// BenchmarkMountRead reads a 256 MiB file sequentially through a mount:
// cold (its blocks on a peer over loopback), and again with the blocks in
// the store but not in the page cache, against reading the same bytes from
// a file on the local disk, page cache dropped too.
func BenchmarkMountRead(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("mounting and dropping the page cache need root")
	}
	const size = 256 << 20
	img, err := testimage.Image(77, testimage.Platforms[0], size)
	if err != nil {
		b.Fatal(err)
	}
	layout := b.TempDir()
	if err := testimage.WriteLayout(layout, "big", img); err != nil {
		b.Fatal(err)
	}
	origin := shoalHome(b, "kubo", "flatfs")
	addr, _ := shoalDaemon(b, origin)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+layout+":big"))
	// Dirty pages survive drop_caches: without the sync, a file just
	// written (the copy on disk, the file cache's copy) reads from memory.
	dropCaches := func() {
		unix.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Fatal(err)
		}
	}
	readAll := func(p string) {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		// 1 MiB reads, as dd bs=1M: io.Copy to io.Discard would read in
		// io.Discard's 8 KiB pieces whatever buffer it is given.
		buf := make([]byte, 1<<20)
		var n int64
		for {
			k, err := f.Read(buf)
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatalf("read %s: %v", p, err)
			}
		}
		if n != size {
			b.Fatalf("read %s: %d bytes, want %d", p, n, size)
		}
	}
	bigFile := func(dir string) string {
		var found string
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				found = p
			}
			return err
		})
		if found == "" {
			b.Fatal("no file in the image")
		}
		return found
	}

	mount := func(b *testing.B, fileCache bool) (string, func() float64) {
		env := shoalHome(b, "kubo", "flatfs")
		if !fileCache {
			home := strings.TrimPrefix(env[0], "SHOAL_HOME=")
			config, err := os.ReadFile(filepath.Join(home, "config.toml"))
			if err != nil {
				b.Fatal(err)
			}
			off := strings.Replace(string(config), `file-cache = "filecache"`, `file-cache = ""`, 1)
			if off == string(config) {
				b.Fatalf("no file-cache setting in the config:\n%s", config)
			}
			if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(off), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		mnt := b.TempDir()
		_, unmount := startMount(b, env, nil, root, mnt, addr)
		return mnt, unmount
	}

	b.Run("mount/cold", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			mnt, unmount := mount(b, true)
			f := bigFile(mnt)
			b.StartTimer()
			readAll(f)
			b.StopTimer()
			unmount()
			b.StartTimer()
		}
	})
	// stored: the blocks are in the store, the file cache off, so every
	// read inflates its spans again; cached: the file was read whole
	// once, and its copy in the file cache serves it.
	for _, c := range []struct {
		name      string
		fileCache bool
	}{{"mount/stored", false}, {"mount/cached", true}} {
		b.Run(c.name, func(b *testing.B) {
			mnt, unmount := mount(b, c.fileCache)
			defer unmount()
			f := bigFile(mnt)
			readAll(f) // every block now in the store, and the copy made
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				dropCaches()
				b.StartTimer()
				readAll(f)
			}
		})
	}
	b.Run("disk", func(b *testing.B) {
		mnt, unmount := mount(b, false)
		local := filepath.Join(b.TempDir(), "copy")
		run(b, nil, "cp", bigFile(mnt), local)
		unmount()
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			dropCaches()
			b.StartTimer()
			readAll(local)
		}
	})
}

// startMount runs `shoal mount` in a new node, returns once it serves,
// and gives its log and a function that unmounts it, waits for it and
// gives its peak memory (MiB).
func startMount(b *testing.B, env []string, host *testbed.Host, root, mnt, peer string, args ...string) (*testproc.Logs, func() float64) {
	b.Helper()
	a := argv(host, shoalBin, append([]string{"mount", root, mnt, "--peer", peer}, args...)...)
	cmd := exec.Command(a[0], a[1:]...)
	cmd.Env = append(os.Environ(), env...)
	logs := &testproc.Logs{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	for !strings.Contains(logs.String(), "mounted ") {
		select {
		case <-done:
			b.Fatalf("shoal mount ended: %s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return logs, func() float64 {
		run(b, env, shoalBin, "unmount", mnt)
		<-done
		return float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
	}
}
