// Package bench measures shoal against its anchors (kubo, a distribution
// registry with skopeo) in the same run, on a real Debian image. Run it with
// scripts/bench.sh; results and ratios go in docs/benchmarks.md.
package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// tools found once per run.
var (
	shoalBin = os.Getenv("SHOAL_BIN")
	kuboBin  = os.Getenv("SHOAL_KUBO")
	debImage = os.Getenv("SHOAL_BENCH_IMAGE") // an OCI layout with tag bookworm
)

// scratchRoot holds the stores and layouts the benchmarks write; it is
// removed when the run ends, not after each benchmark. This machine's ext4
// has no journal, and without one ext4 will not reuse an inode freed in the
// last minute: creating files right after thousands were deleted walks past
// them all, which cost a pull a fifth of its CPU. A node that pulls an image
// has not usually just deleted a store, so nothing is deleted mid-run.
var scratchRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratchRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// scratchDir is a new directory under scratchRoot, kept until the run ends.
func scratchDir(b *testing.B) string {
	b.Helper()
	// Short names: a shoal home holds unix sockets, whose paths are limited.
	dir, err := os.MkdirTemp(scratchRoot, "")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

func requireTools(b *testing.B) {
	b.Helper()
	if shoalBin == "" || kuboBin == "" || debImage == "" {
		b.Skip("set SHOAL_BIN, SHOAL_KUBO and SHOAL_BENCH_IMAGE (scripts/bench.sh does)")
	}
}

// run runs a command, discarding its output, and returns its peak resident
// memory in MiB.
func run(b *testing.B, env []string, name string, args ...string) float64 {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
}

func output(b *testing.B, env []string, name string, args ...string) string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// daemon starts a long-running process and stops it when the benchmark ends.
func daemon(b *testing.B, env []string, ready func() bool, name string, args ...string) *exec.Cmd {
	b.Helper()
	cmd, _ := startDaemon(b, env, ready, name, args...)
	return cmd
}

// startDaemon is daemon, with a stop function for stopping it sooner.
func startDaemon(b *testing.B, env []string, ready func() bool, name string, args ...string) (*exec.Cmd, func()) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	testproc.Start(b, cmd, 60*time.Second, func(string) bool { return ready() })
	return cmd, func() { testproc.Stop(cmd) }
}

// peakRSS reads a live process's peak resident memory in MiB.
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// imageBlobs lists the blob files of the benchmark layout and their total size.
func imageBlobs(b *testing.B) ([]string, int64) {
	return layoutBlobs(b, debImage)
}

// layoutSize is the total size of a layout's blobs.
func layoutSize(b *testing.B, layout string) int64 {
	_, size := layoutBlobs(b, layout)
	return size
}

func layoutBlobs(b *testing.B, layout string) ([]string, int64) {
	b.Helper()
	var files []string
	var total int64
	err := filepath.WalkDir(filepath.Join(layout, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, p)
		total += fi.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return files, total
}

// storeStats counts the files and bytes under a directory.
func storeStats(dir string) (files int, bytes int64) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes
}

func freePort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// kuboRepo makes a kubo repo on loopback with free ports and no bootstrap.
func kuboRepo(b *testing.B) []string {
	b.Helper()
	env := []string{"IPFS_PATH=" + scratchDir(b)}
	run(b, env, kuboBin, "init", "--profile=test")
	return env
}

func kuboDaemon(b *testing.B, env []string) (*exec.Cmd, string) {
	b.Helper()
	apiFile := strings.TrimPrefix(env[0], "IPFS_PATH=") + "/api"
	cmd := daemon(b, env, func() bool { _, err := os.Stat(apiFile); return err == nil }, kuboBin, "daemon")
	var id struct {
		ID        string
		Addresses []string
	}
	if err := json.Unmarshal([]byte(output(b, env, kuboBin, "id")), &id); err != nil {
		b.Fatal(err)
	}
	for _, a := range id.Addresses {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") && !strings.Contains(a, "/ws") {
			return cmd, a
		}
	}
	b.Fatalf("kubo has no loopback TCP address: %v", id.Addresses)
	return nil, ""
}

// shoalHome makes a shoal home on loopback with the given extra config.
func shoalHome(b *testing.B, layout, blocks string) []string {
	b.Helper()
	env := []string{"SHOAL_HOME=" + scratchDir(b)}
	run(b, env, shoalBin, "init", "--layout", layout, "--blocks", blocks, "--mdns=false",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	return env
}

// shoalDaemon runs `shoal daemon` on loopback and returns its swarm
// address and its registry's host:port.
func shoalDaemon(b *testing.B, env []string, args ...string) (addr, registry string) {
	b.Helper()
	d := startShoalDaemon(b, env, nil, args...)
	return d.addr, d.registry
}

// runningShoal is a `shoal daemon` the benchmark started.
type runningShoal struct {
	home           string
	addr, registry string
	containerd     string // the socket of its containerd plugins
	pid            int
	stop           func()
}

// startShoalDaemon runs `shoal daemon` on host (nil: here).
func startShoalDaemon(b *testing.B, env []string, host *testbed.Host, args ...string) runningShoal {
	b.Helper()
	d := runningShoal{home: strings.TrimPrefix(env[0], "SHOAL_HOME=")}
	cmd := argv(host, shoalBin, append([]string{"daemon", "--no-mdns", "--registry-listen", "127.0.0.1:0"}, args...)...)
	var started *exec.Cmd
	started, d.stop = startDaemon(b, env, func() bool {
		c := exec.Command(shoalBin, "id", "--json")
		c.Env = append(os.Environ(), env...)
		out, err := c.Output()
		if err != nil {
			return false
		}
		var id struct {
			Addresses  []string
			Registry   string
			Containerd string
		}
		if json.Unmarshal(out, &id) != nil {
			return false
		}
		d.registry, d.containerd = id.Registry, id.Containerd
		for _, a := range id.Addresses {
			if strings.Contains(a, "/tcp/") {
				d.addr = a
				return true
			}
		}
		return false
	}, cmd[0], cmd[1:]...)
	d.pid = started.Process.Pid
	return d
}

// distribution runs Debian's docker-registry (distribution 2.8) on a free
// loopback port and returns its host:port.
func distribution(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	port := freePort(b)
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%d\n", filepath.Join(dir, "data"), port)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	daemon(b, nil, func() bool {
		resp, err := http.Get("http://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "docker-registry", "serve", cfg)
	return host
}

// skopeoPull copies ref (a docker:// reference on loopback) into a new
// OCI layout, timed, and returns skopeo's peak memory in MiB.
func skopeoPull(b *testing.B, ref string) (rss float64, took time.Duration) {
	b.Helper()
	b.StopTimer()
	out := filepath.Join(scratchDir(b), "out")
	b.StartTimer()
	start := time.Now()
	rss = run(b, nil, "skopeo", "copy", "--src-tls-verify=false", ref, "oci:"+out+":bookworm")
	return rss, time.Since(start)
}
