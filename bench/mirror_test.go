package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shoal-ipfs/shoal/internal/testbed"
)

// BenchmarkMirrorRollout is the time until N = 8 nodes all have the Debian
// image, each pulling it by tag at the same moment with containerd's own
// resolver and fetcher (internal/tools/fetchimage) through a hosts.toml,
// from a distribution registry; every node and the registry behind its own
// 100 Mbit/s link. Side by side in one run:
//
//   - upstream: every node straight from the registry;
//   - whole-only: through shoal mirrors whose peers serve only blobs they
//     hold whole (no swarm while pulling: Spegel's behaviour);
//   - shoal: through shoal mirrors;
//   - shoal-second: the image already on one node when the rest start.
//
// origin-sent-x-image is what the registry sent against the image.
// SHOAL_BENCH_ROLLOUT_LAYER=BYTES rolls out an image of one layer of that
// much random tar instead of the Debian image.
func BenchmarkMirrorRollout(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces need root")
	}
	fetch := fetchImageBin(b)
	const n = 8
	image, size := rolloutImage(b)
	b.Run("upstream", func(b *testing.B) {
		tb, reg := mirrorTestbed(b, n, image)
		hosts := mirrorHostsDir(b, reg, "")
		scaleRun(b, tb, size, func(*testing.B) func(int, string) []string {
			return func(_ int, dir string) []string {
				return fetchArgs(fetch, hosts, dir, reg+rolloutRef)
			}
		})
	})
	for _, c := range []struct {
		name   string
		args   []string
		warmed bool
	}{
		{"whole-only", []string{"--mirror-whole-only"}, false},
		{"shoal", nil, false},
		{"shoal-second", nil, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			tb, reg := mirrorTestbed(b, n, image)
			var running []runningShoal
			scaleRun(b, tb, size, func(b *testing.B) func(int, string) []string {
				for _, d := range running {
					d.stop()
				}
				running = nil
				var peers, dirs []string
				for _, h := range tb.Hosts[1:] {
					env := shoalHome(b, "kubo", "flatfs")
					args := append([]string{"--listen", "/ip4/" + h.Addr + "/tcp/4051", "--mirror", reg + "=http://" + reg}, c.args...)
					d := startShoalDaemon(b, env, &h, append(args, peers...)...)
					b.Cleanup(d.stop)
					running = append(running, d)
					peers = append(peers, "--peer", d.addr)
					dirs = append(dirs, mirrorHostsDir(b, reg, d.registry))
				}
				if c.warmed {
					argv := tb.Hosts[1].Argv(fetch, "--hosts-dir", dirs[0], "--out", filepath.Join(scratchDir(b), "warm"), reg+rolloutRef)
					run(b, nil, argv[0], argv[1:]...)
				}
				return func(i int, dir string) []string {
					return fetchArgs(fetch, dirs[i], dir, reg+rolloutRef)
				}
			})
		})
	}
}

// BenchmarkMirrorMiss is what a request the mirror cannot serve costs: one
// node pulls the Debian image straight from the registry, and through a
// shoal daemon that does not mirror it (every request a quick 404, then
// the registry, as containerd goes on to its next host).
func BenchmarkMirrorMiss(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces need root")
	}
	fetch := fetchImageBin(b)
	image, size := rolloutImage(b)
	for _, through := range []bool{false, true} {
		name := map[bool]string{false: "direct", true: "through-mirror"}[through]
		b.Run(name, func(b *testing.B) {
			tb, reg := mirrorTestbed(b, 1, image)
			hosts := mirrorHostsDir(b, reg, "")
			if through {
				h := tb.Hosts[1]
				d := startShoalDaemon(b, shoalHome(b, "kubo", "flatfs"), &h, "--listen", "/ip4/"+h.Addr+"/tcp/4051", "--mirror", "other.example")
				b.Cleanup(d.stop)
				hosts = mirrorHostsDir(b, reg, d.registry)
			}
			scaleRun(b, tb, size, func(*testing.B) func(int, string) []string {
				return func(_ int, dir string) []string {
					return fetchArgs(fetch, hosts, dir, reg+rolloutRef)
				}
			})
		})
	}
}

// rolloutRef is the image's name in the testbed's registry.
const rolloutRef = "/library/rollout:v1"

// rolloutImage is the image a rollout pulls, as an OCI layout reference
// (oci:DIR:TAG), and the size of its blobs: the Debian image, or one layer
// of SHOAL_BENCH_ROLLOUT_LAYER bytes of random tar.
func rolloutImage(b *testing.B) (string, int64) {
	b.Helper()
	if layer := sizeFromEnv(b, "SHOAL_BENCH_ROLLOUT_LAYER", 0); layer > 0 {
		layout, size := bigLayout(b, "random", layer, 1)
		return "oci:" + layout + ":big", size
	}
	_, size := imageBlobs(b)
	return "oci:" + debImage + ":bookworm", size
}

// mirrorTestbed is the registry on host 0, holding image (oci:DIR:TAG) as
// rolloutRef, and n nodes.
func mirrorTestbed(b *testing.B, n int, image string) (*testbed.Testbed, string) {
	b.Helper()
	tb := scaleTestbed(b, n)
	reg := registryOn(b, tb.Hosts[0])
	push := tb.Hosts[0].Argv("skopeo", "copy", "--dest-tls-verify=false", image, "docker://"+reg+rolloutRef)
	run(b, nil, push[0], push[1:]...)
	return tb, reg
}

// mirrorHostsDir is a containerd hosts directory for registry reg (plain
// HTTP), through the mirror at mirror first when there is one.
func mirrorHostsDir(b *testing.B, reg, mirror string) string {
	b.Helper()
	dir := scratchDir(b)
	conf := fmt.Sprintf("server = \"http://%s\"\n", reg)
	if mirror != "" {
		conf += fmt.Sprintf("\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror)
	}
	if err := os.MkdirAll(filepath.Join(dir, reg), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, reg, "hosts.toml"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// fetchArgs is the command that fetches ref through the hosts directory
// hosts into the content store dir; with SHOAL_BENCH_TRACE=DIR it prints
// when each blob started and ended, and scaleRun writes that into DIR.
func fetchArgs(fetch, hosts, dir, ref string) []string {
	args := []string{fetch, "--hosts-dir", hosts, "--out", dir}
	if os.Getenv("SHOAL_BENCH_TRACE") != "" {
		args = append(args, "--trace")
	}
	return append(args, ref)
}

// fetchImageBin builds internal/tools/fetchimage once per run.
func fetchImageBin(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(scratchRoot, "fetchimage")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/tools/fetchimage").CombinedOutput(); err != nil {
		b.Fatalf("build fetchimage: %v\n%s", err, out)
	}
	return bin
}
