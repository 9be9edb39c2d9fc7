package bench

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ipfs/shoal/internal/testproc"
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
		b.Run(fmt.Sprintf("shoal/%s/%s", v.layout, v.blocks), func(b *testing.B) { benchPush(b, size, v.layout, v.blocks) })
	}
	// The defaults index every layer for lazy mounting; kubo does nothing
	// of the sort, so the push alone is measured too.
	b.Run("shoal/kubo/flatfs/no-index", func(b *testing.B) { benchPush(b, size, "kubo", "flatfs", "--index=false") })
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

// benchPush pushes the Debian image into a new store each iteration.
func benchPush(b *testing.B, size int64, layout, blocks string, args ...string) {
	b.SetBytes(size)
	var rss float64
	var home string
	for b.Loop() {
		b.StopTimer()
		env := shoalHome(b, layout, blocks)
		home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
		b.StartTimer()
		rss = max(rss, run(b, env, shoalBin, append(append([]string{"push"}, args...), "oci:"+debImage+":bookworm")...))
	}
	reportStore(b, home, rss)
}

func reportStore(b *testing.B, dir string, rss float64) {
	b.Helper()
	// Files holding blocks: kubo's and shoal's loose block files, and
	// shoal's packs (one per blob added or fetched whole).
	blocks, _ := storeStats(filepath.Join(dir, "blocks"))
	packs, _ := storeStats(filepath.Join(dir, "packs"))
	blocks += packs
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
			addr, _ := shoalDaemon(b, origin)
			root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
			b.SetBytes(size)
			var rss float64
			var home string
			for b.Loop() {
				b.StopTimer()
				env := shoalHome(b, v.layout, v.blocks)
				home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
				out := filepath.Join(scratchDir(b), "out")
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
		b.SetBytes(size)
		var rss float64
		for b.Loop() {
			// A new repo and daemon each time, as shoal pulls into a new
			// store (not `ipfs repo gc`: see scratchRoot).
			b.StopTimer()
			fetcher := kuboRepo(b)
			cmd, _ := kuboDaemon(b, fetcher)
			run(b, fetcher, kuboBin, "swarm", "connect", addr)
			b.StartTimer()
			for _, c := range cids {
				run(b, fetcher, kuboBin, "cat", c)
			}
			b.StopTimer()
			blocks, _ := storeStats(filepath.Join(strings.TrimPrefix(fetcher[0], "IPFS_PATH="), "blocks"))
			b.ReportMetric(float64(blocks), "block-files")
			rss = max(rss, peakRSS(cmd.Process.Pid))
			testproc.Stop(cmd)
			b.StartTimer()
		}
		b.ReportMetric(rss, "peak-MiB")
	})

	b.Run("registry/skopeo", func(b *testing.B) {
		ref := "docker://" + distribution(b) + "/debian:bookworm"
		run(b, nil, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+debImage+":bookworm", ref)
		b.SetBytes(size)
		var rss float64
		for b.Loop() {
			rss = max(rss, skopeoPull(b, ref))
		}
		b.ReportMetric(rss, "peak-MiB")
	})
}

// BenchmarkGateway is `skopeo copy` of the Debian image into an OCI layout
// from shoal's registry, against the same from a distribution registry on
// loopback: by tag and by CID with the blocks in the serving node, and by
// CID from a node whose only peer holds the blocks (garbage-collected
// after each copy, so that every one starts empty).
func BenchmarkGateway(b *testing.B) {
	requireTools(b)
	_, size := imageBlobs(b)
	src := "oci:" + debImage + ":bookworm"

	b.Run("registry", func(b *testing.B) {
		ref := "docker://" + distribution(b) + "/debian:bookworm"
		run(b, nil, "skopeo", "copy", "--dest-tls-verify=false", src, ref)
		b.SetBytes(size)
		for b.Loop() {
			skopeoPull(b, ref)
		}
	})

	origin := shoalHome(b, "kubo", "flatfs")
	addr, reg := shoalDaemon(b, origin)
	run(b, nil, "skopeo", "copy", "--dest-tls-verify=false", src, "docker://"+reg+"/debian:bookworm")
	var imgs []struct{ CID, Source string }
	if err := json.Unmarshal([]byte(output(b, origin, shoalBin, "images", "--json")), &imgs); err != nil || len(imgs) == 0 {
		b.Fatalf("images on the origin: %v %v", imgs, err)
	}
	root := imgs[0].CID

	b.Run("shoal/tag/local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			skopeoPull(b, "docker://"+reg+"/debian:bookworm")
		}
	})
	b.Run("shoal/cid/local", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			skopeoPull(b, "docker://"+reg+"/ipfs/"+root)
		}
	})
	b.Run("shoal/cid/peer", func(b *testing.B) {
		edge := shoalHome(b, "kubo", "flatfs")
		_, edgeReg := shoalDaemon(b, edge, "--peer", addr)
		b.SetBytes(size)
		for b.Loop() {
			skopeoPull(b, "docker://"+edgeReg+"/ipfs/"+root)
			b.StopTimer()
			run(b, edge, shoalBin, "gc")
			b.StartTimer()
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
