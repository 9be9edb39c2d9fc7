package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/plot"
	"github.com/shoal-ipfs/shoal/internal/testbed"
	"golang.org/x/sys/unix"
)

// BenchmarkScale is the time until N nodes all have the Debian image, each
// node and the origin behind its own 100 Mbit/s link on a testbed, and the
// bytes the origin sent meanwhile. shoal: the origin is a shoal daemon
// holding the image, the N nodes are shoal daemons connected to it and to
// each other, each running `shoal pull`. registry: the origin is a
// distribution registry, the N nodes each run `skopeo copy` from it. All N
// start at once.
func BenchmarkScale(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces need root")
	}
	_, size := imageBlobs(b)
	nodes := []int{1, 2, 4, 8}
	// Mean seconds by arm and N, for the plot.
	took := map[string]map[int]float64{"shoal": {}, "registry": {}}
	defer func() {
		if err := plotScale(nodes, took, "out/scale.png"); err != nil {
			b.Log(err)
		}
	}()
	for _, n := range nodes {
		b.Run(fmt.Sprintf("n=%d/shoal", n), func(b *testing.B) {
			defer func() { took["shoal"][n] = b.Elapsed().Seconds() / float64(b.N) }()
			tb := scaleTestbed(b, n)
			origin := shoalHome(b, "kubo", "flatfs")
			o := startShoalDaemon(b, origin, &tb.Hosts[0], "--listen", "/ip4/"+tb.Hosts[0].Addr+"/tcp/4051")
			root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
			var running []runningShoal
			scaleRun(b, tb, size, func(b *testing.B) func(i int, dir string) []string {
				// Fresh nodes, each connected to the origin and to those
				// before it: all to all. The last iteration's go first, or
				// the DHT would lead the new ones to them.
				for _, d := range running {
					d.stop()
				}
				running = nil
				var homes []string
				peers := []string{"--peer", o.addr}
				for _, h := range tb.Hosts[1:] {
					env := shoalHome(b, "kubo", "flatfs")
					d := startShoalDaemon(b, env, &h, append([]string{"--listen", "/ip4/" + h.Addr + "/tcp/4051"}, peers...)...)
					b.Cleanup(d.stop)
					running = append(running, d)
					peers = append(peers, "--peer", d.addr)
					homes = append(homes, d.home)
				}
				return func(i int, dir string) []string {
					return []string{shoalBin, "--home", homes[i], "pull", root, "--to", "oci:" + dir + ":bookworm"}
				}
			})
			// Leaves the origin served one at a time (swarm fetch), against
			// the image's: the rest of what it sent went as whole-blob streams.
			leaves := metricSum(b, &tb.Hosts[0], "http://"+o.registry+"/metrics", "shoal_served_blocks_total")
			b.ReportMetric(float64(leaves)*(256<<10)/float64(size)/float64(b.N), "origin-leaves-x-image")
		})
		b.Run(fmt.Sprintf("n=%d/registry", n), func(b *testing.B) {
			defer func() { took["registry"][n] = b.Elapsed().Seconds() / float64(b.N) }()
			tb := scaleTestbed(b, n)
			reg := registryOn(b, tb.Hosts[0])
			push := tb.Hosts[0].Argv("skopeo", "copy", "--dest-tls-verify=false", "oci:"+debImage+":bookworm", "docker://"+reg+"/debian:bookworm")
			run(b, nil, push[0], push[1:]...)
			scaleRun(b, tb, size, func(*testing.B) func(i int, dir string) []string {
				return func(_ int, dir string) []string {
					return []string{"skopeo", "copy", "--src-tls-verify=false", "docker://" + reg + "/debian:bookworm", "oci:" + dir + ":bookworm"}
				}
			})
		})
	}
}

// plotScale draws the time until all N nodes have the image against N,
// shoal's and the registry's, as a PNG at path; only when every N of both
// ran (a run of some sub-benchmarks plots nothing).
func plotScale(nodes []int, took map[string]map[int]float64, path string) error {
	c := plot.Chart{
		Title:  "Time until all N nodes have the Debian image, each behind 100 Mbit/s",
		XLabel: "N, nodes pulling at once",
		YLabel: "seconds",
	}
	for _, arm := range []struct{ key, name string }{{"shoal", "shoal pull"}, {"registry", "skopeo copy from a registry"}} {
		s := plot.Series{Name: arm.name}
		for _, n := range nodes {
			t, ok := took[arm.key][n]
			if !ok || t <= 0 {
				return nil
			}
			s.X, s.Y = append(s.X, float64(n)), append(s.Y, t)
		}
		c.Series = append(c.Series, s)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := c.WritePNG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scaleTestbed is an origin and n nodes, each behind 100 Mbit/s and 5 ms
// each way (10 ms one way between two hosts).
func scaleTestbed(b *testing.B, n int) *testbed.Testbed {
	b.Helper()
	return testbed.ForTest(b, n+1, testbed.Link{Rate: "100mbit", Delay: 5 * time.Millisecond})
}

// scaleRun times the nodes of tb (all but the origin, host 0) each
// running the command that setup's function gives for it, all at once,
// setup running before each iteration outside the timer. It reports what
// the origin sent.
func scaleRun(b *testing.B, tb *testbed.Testbed, size int64, setup func(b *testing.B) func(i int, dir string) []string) {
	var sent, all uint64
	var busy, total float64
	fastest, slowest := math.Inf(1), 0.0
	for b.Loop() {
		b.StopTimer()
		command := setup(b)
		before, err := tb.Sent(tb.Hosts[0])
		if err != nil {
			b.Fatal(err)
		}
		allBefore := sentByAll(b, tb)
		dirs := make([]string, len(tb.Hosts)-1)
		for i := range dirs {
			dirs[i] = filepath.Join(b.TempDir(), "oci")
		}
		errs := make([]error, len(dirs))
		var wg sync.WaitGroup
		// What earlier iterations and benchmarks left for the disk to
		// write is written now, not while these nodes pull.
		unix.Sync()
		cpuBefore := machineCPU(b)
		start := time.Now()
		b.StartTimer()
		for i, h := range tb.Hosts[1:] {
			argv := command(i, dirs[i])
			wg.Go(func() {
				out, err := h.Command(context.Background(), argv[0], argv[1:]...).CombinedOutput()
				if err != nil {
					errs[i] = fmt.Errorf("%s on %s: %v: %s", argv[0], h.Name, err, out)
				} else if dir := os.Getenv("SHOAL_BENCH_TRACE"); dir != "" {
					// Benchmarks' logs are cut short: the trace goes to files.
					name := filepath.Join(dir, fmt.Sprintf("%s-%s.log", filepath.Base(argv[0]), h.Name))
					if err := os.WriteFile(name, out, 0o644); err != nil {
						errs[i] = err
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		took := time.Since(start).Seconds()
		fastest, slowest = min(fastest, took), max(slowest, took)
		cpuAfter := machineCPU(b)
		busy += cpuAfter.busy - cpuBefore.busy
		total += cpuAfter.total - cpuBefore.total
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		after, err := tb.Sent(tb.Hosts[0])
		if err != nil {
			b.Fatal(err)
		}
		sent = after - before
		all = sentByAll(b, tb) - allBefore
		b.StartTimer()
	}
	// The spread of the iterations: one run of this VM moves by ±10%.
	b.ReportMetric(fastest, "fastest-s")
	b.ReportMetric(slowest, "slowest-s")
	// How busy the machine's cores were while the nodes pulled: near
	// 100%, the pull waits on the CPU rather than the links.
	b.ReportMetric(100*busy/total, "cpu-busy-%")
	// What every host sent, against what the nodes had to receive: above
	// 1 (and the headers' few percent), bytes went where they were not
	// needed.
	b.ReportMetric(float64(all)/float64(size)/float64(len(tb.Hosts)-1), "all-sent-x-needed")
	b.ReportMetric(float64(sent)/(1<<20), "origin-sent-MiB")
	b.ReportMetric(float64(sent)/float64(size), "origin-sent-x-image")
}

// registryOn runs Debian's docker-registry on host, port 5000, and
// returns its host:port.
func registryOn(b *testing.B, host testbed.Host) string {
	b.Helper()
	dir := b.TempDir()
	addr := host.Addr + ":5000"
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := host.Argv("docker-registry", "serve", cfg)
	daemon(b, nil, func() bool {
		ok := false
		host.Do(func() error {
			resp, err := httpGetHere("http://" + addr + "/v2/")
			if err == nil {
				ok = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
			return err
		})
		return ok
	}, cmd[0], cmd[1:]...)
	return addr
}

// cpuTimes is the machine's CPU time so far, in clock ticks of all cores:
// busy, and in all.
type cpuTimes struct{ busy, total float64 }

func machineCPU(b *testing.B) cpuTimes {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 8 || fields[0] != "cpu" {
		b.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var t cpuTimes
	for i, f := range fields[1:] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		if i >= 8 { // guest time is counted in user time already
			break
		}
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

// sentByAll is what every host of tb has sent so far.
func sentByAll(b *testing.B, tb *testbed.Testbed) uint64 {
	b.Helper()
	var sum uint64
	for _, h := range tb.Hosts {
		sent, err := tb.Sent(h)
		if err != nil {
			b.Fatal(err)
		}
		sum += sent
	}
	return sum
}
