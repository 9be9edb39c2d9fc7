package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ipfs/shoal/internal/testbed"
)

// containerd2 is the containerd 2.x scripts/build-containerd.sh built.
var containerd2 = os.Getenv("SHOAL_CONTAINERD2")

// BenchmarkContainerStart is the time from a node with nothing of the
// image to a container's first output: containerd 2.x running
// `cat /etc/os-release` in the Debian image and a python3 hello world in
// the Debian+python3 one, with the image's blocks on a peer over loopback
// or behind a 100 Mbit/s link. shoal-lazy is `shoal pull --to
// containerd:REF` then `ctr run --snapshotter shoal`; overlayfs-full is
// `ctr images pull` through the node's shoal registry (every blob fetched
// from the peer, unpacked to overlayfs) then `ctr run`. Each iteration
// starts from a fresh shoal node and a fresh containerd, started outside
// the timer. It reports the bytes the node fetched from the peer.
func BenchmarkContainerStart(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("containerd, mounts and network namespaces need root")
	}
	if containerd2 == "" {
		b.Skip("set SHOAL_CONTAINERD2 (scripts/bench.sh does)")
	}
	images := []struct {
		name, layout string
		command      []string
	}{
		{"debian", debImage, []string{"cat", "/etc/os-release"}},
		{"python", os.Getenv("SHOAL_BENCH_PYTHON_IMAGE"), []string{"python3", "-c", "print('hello from python')"}},
	}
	for _, link := range []string{"loopback", "100mbit-20ms"} {
		b.Run(link, func(b *testing.B) {
			var (
				origin []string
				addr   string
				puller *testbed.Host // nil: this machine's loopback
			)
			if link == "loopback" {
				origin = shoalHome(b, "kubo", "flatfs")
				addr, _ = shoalDaemon(b, origin)
			} else {
				origin, addr, puller = shapedPair(b, shapedLink)
			}
			for _, img := range images {
				if img.layout == "" {
					continue
				}
				size := layoutSize(b, img.layout)
				root := lastLine(output(b, origin, shoalBin, "push", "oci:"+img.layout+":bookworm"))
				b.Run(img.name+"/shoal-lazy", func(b *testing.B) {
					containerStart(b, addr, puller, size, func(node runningShoal, ctrd ctrdEnv, id string) {
						name := lastLine(output(b, nil, shoalBin, "--home", node.home, "pull", root, "--to", "containerd:bench.shoal/"+img.name+":lazy",
							"--containerd-address", ctrd.socket, "--containerd-namespace", "bench"))
						ctrd.ctr(b, append([]string{"run", "--rm", "--snapshotter", "shoal", name, id}, img.command...)...)
					})
				})
				b.Run(img.name+"/overlayfs-full", func(b *testing.B) {
					containerStart(b, addr, puller, size, func(node runningShoal, ctrd ctrdEnv, id string) {
						ref := node.registry + "/ipfs/" + root + ":latest"
						ctrd.ctr(b, "images", "pull", "--hosts-dir", ctrd.hosts, ref)
						ctrd.ctr(b, append([]string{"run", "--rm", ref, id}, img.command...)...)
					})
				})
			}
		})
	}
}

// ctrdEnv is a containerd started for one iteration.
type ctrdEnv struct {
	socket, hosts string
}

func (c ctrdEnv) ctr(b *testing.B, args ...string) {
	b.Helper()
	run(b, nil, filepath.Join(containerd2, "ctr"), append([]string{"--address", c.socket, "--namespace", "bench"}, args...)...)
}

// containerStart times start, each iteration on a fresh shoal node peered
// with addr and a fresh containerd plugged into it.
func containerStart(b *testing.B, addr string, host *testbed.Host, size int64, start func(node runningShoal, ctrd ctrdEnv, id string)) {
	var fetched int64
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		env := shoalHome(b, "kubo", "flatfs")
		node := startShoalDaemon(b, env, host, "--peer", addr)
		ctrd, stop := startContainerd(b, node, host)
		b.StartTimer()
		start(node, ctrd, fmt.Sprintf("bench-%d", i))
		b.StopTimer()
		fetched = metricSum(b, host, "http://"+node.registry+"/metrics", "shoal_fetched_bytes_total")
		stop()
		node.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(fetched)/(1<<20), "fetched-MiB")
	b.ReportMetric(100*float64(fetched)/float64(size), "fetched-%")
}

// startContainerd runs containerd 2.x on host (nil: here), with the config
// `shoal containerd config` prints for node, and a hosts directory for
// node's registry.
func startContainerd(b *testing.B, node runningShoal, host *testbed.Host) (ctrdEnv, func()) {
	b.Helper()
	dir, err := os.MkdirTemp("", "ctrd-bench-") // short: socket paths are limited
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	c := ctrdEnv{socket: filepath.Join(dir, "c.sock"), hosts: filepath.Join(dir, "hosts")}
	hostDir := filepath.Join(c.hosts, node.registry)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		b.Fatal(err)
	}
	hostsTOML := fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+node.registry, "http://"+node.registry)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hostsTOML), 0o644); err != nil {
		b.Fatal(err)
	}
	fragment := output(b, []string{"SHOAL_HOME=" + node.home}, shoalBin, "containerd", "config")
	fragment = strings.Replace(fragment, "version = 3\n", "", 1)
	cfg := fmt.Sprintf("version = 3\nroot = %q\nstate = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "state")) +
		fragment + fmt.Sprintf("\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", c.socket, c.socket+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"PATH=" + containerd2 + ":" + os.Getenv("PATH")}
	cmd := argv(host, filepath.Join(containerd2, "containerd"), "--config", cfgPath)
	_, stop := startDaemon(b, env, func() bool {
		_, err := os.Stat(c.socket)
		return err == nil
	}, cmd[0], cmd[1:]...)
	return c, stop
}
