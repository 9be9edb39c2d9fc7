package bench

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shoalVariants are the layouts and block stores shoal is measured with.
var shoalVariants = []struct{ layout, blocks string }{
	{"kubo", "flatfs"},
	{"kubo", "pebble"},
	{"unixfs-v1-2025", "flatfs"},
	{"unixfs-v1-2025", "pebble"},
}

// BenchmarkPush adds the Debian image to an empty store: shoal with each
// block store and layout, against `ipfs add --cid-version=1` of the same
// blobs into an empty kubo repo.
func BenchmarkPush(b *testing.B) {
	requireTools(b)
	files, size := imageBlobs(b)
	for _, v := range shoalVariants {
		b.Run(fmt.Sprintf("shoal/%s/%s", v.layout, v.blocks), func(b *testing.B) {
			b.SetBytes(size)
			var rss float64
			var home string
			for b.Loop() {
				b.StopTimer()
				env := shoalHome(b, v.layout, v.blocks)
				home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
				b.StartTimer()
				rss = max(rss, run(b, env, shoalBin, "push", "oci:"+debImage+":bookworm"))
			}
			reportStore(b, home, rss)
		})
	}
	b.Run("kubo/ipfs-add", func(b *testing.B) {
		b.SetBytes(size)
		var rss float64
		var repo string
		for b.Loop() {
			b.StopTimer()
			env := kuboRepo(b)
			repo = strings.TrimPrefix(env[0], "IPFS_PATH=")
			b.StartTimer()
			rss = max(rss, run(b, env, kuboBin, append([]string{"add", "--cid-version=1", "-Q"}, files...)...))
		}
		reportStore(b, repo, rss)
	})
}

func reportStore(b *testing.B, dir string, rss float64) {
	b.Helper()
	blocks, _ := storeStats(filepath.Join(dir, "blocks"))
	_, bytes := storeStats(dir)
	b.ReportMetric(rss, "peak-MiB")
	b.ReportMetric(float64(blocks), "block-files")
	b.ReportMetric(float64(bytes)/(1<<20), "stored-MiB")
}

// BenchmarkPull fetches the Debian image from one peer over loopback into an
// empty node: shoal from a shoal daemon, kubo from a kubo daemon over
// bitswap (`ipfs cat` of each blob, the DESIGN anchor), and skopeo from a
// distribution registry.
func BenchmarkPull(b *testing.B) {
	requireTools(b)
	files, size := imageBlobs(b)

	for _, v := range shoalVariants {
		b.Run(fmt.Sprintf("shoal/%s/%s", v.layout, v.blocks), func(b *testing.B) {
			origin := shoalHome(b, v.layout, v.blocks)
			_, addr := shoalDaemon(b, origin)
			root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
			b.SetBytes(size)
			var rss float64
			var home string
			for b.Loop() {
				b.StopTimer()
				env := shoalHome(b, v.layout, v.blocks)
				home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
				out := filepath.Join(b.TempDir(), "out")
				b.StartTimer()
				rss = max(rss, run(b, env, shoalBin, "pull", root, "--peer", addr, "--to", "oci:"+out+":bookworm"))
			}
			reportStore(b, home, rss)
		})
	}

	b.Run("kubo/bitswap", func(b *testing.B) {
		origin := kuboRepo(b)
		_, addr := kuboDaemon(b, origin)
		var cids []string
		for _, f := range files {
			cids = append(cids, output(b, origin, kuboBin, "add", "--cid-version=1", "-Q", f))
		}
		fetcher := kuboRepo(b)
		cmd, _ := kuboDaemon(b, fetcher)
		run(b, fetcher, kuboBin, "swarm", "connect", addr)
		b.SetBytes(size)
		for b.Loop() {
			for _, c := range cids {
				run(b, fetcher, kuboBin, "cat", c)
			}
			b.StopTimer()
			// What a fetch leaves in the store, before the next one starts empty.
			blocks, _ := storeStats(filepath.Join(strings.TrimPrefix(fetcher[0], "IPFS_PATH="), "blocks"))
			b.ReportMetric(float64(blocks), "block-files")
			run(b, fetcher, kuboBin, "repo", "gc", "--quiet")
			b.StartTimer()
		}
		b.ReportMetric(peakRSS(cmd.Process.Pid), "peak-MiB")
	})

	b.Run("registry/skopeo", func(b *testing.B) {
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
		ref := "docker://" + host + "/debian:bookworm"
		run(b, nil, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+debImage+":bookworm", ref)
		b.SetBytes(size)
		var rss float64
		for b.Loop() {
			b.StopTimer()
			out := filepath.Join(b.TempDir(), "out")
			b.StartTimer()
			rss = max(rss, run(b, nil, "skopeo", "copy", "--src-tls-verify=false", ref, "oci:"+out+":bookworm"))
		}
		b.ReportMetric(rss, "peak-MiB")
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
