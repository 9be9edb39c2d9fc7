package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
)

// BenchmarkShardedPull is the talk's picture: a puller behind a 1 Gbit/s
// link fetches the Debian image (one big layer) from peers behind
// 100 Mbit/s links: from one seeder holding all of it; from four that each
// hold all of it, the layer's blocks fetched from all four at once; or
// from the three members of a group that each keep about a third (shoal
// shard --replicas 1, the origin gone).
func BenchmarkShardedPull(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces need root")
	}
	_, size := imageBlobs(b)
	for _, seeders := range []string{"one-full-seeder", "four-full-seeders", "three-thirds"} {
		b.Run(seeders, func(b *testing.B) {
			tb := testbed.ForTest(b, 5, testbed.Link{Rate: "100mbit"})
			puller := tb.Hosts[4]
			if err := tb.Shape(puller, testbed.Link{Rate: "1gbit"}); err != nil {
				b.Fatal(err)
			}
			listen := func(h testbed.Host) []string { return []string{"--listen", "/ip4/" + h.Addr + "/tcp/4051"} }
			origin := shoalHome(b, "kubo", "flatfs")
			o := startShoalDaemon(b, origin, &tb.Hosts[0], listen(tb.Hosts[0])...)
			root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
			peers := []string{"--peer", o.addr}
			if seeders == "four-full-seeders" {
				for _, h := range tb.Hosts[1:4] {
					env := shoalHome(b, "kubo", "flatfs")
					d := startShoalDaemon(b, env, &h, listen(h)...)
					if got := lastLine(output(b, env, shoalBin, "push", "oci:"+debImage+":bookworm")); got != root {
						b.Fatalf("a seeder pushed the image as %s, the origin as %s", got, root)
					}
					peers = append(peers, "--peer", d.addr)
				}
			}
			if seeders == "three-thirds" {
				peers = nil
				var members [][]string
				key := output(b, origin, shoalBin, "group", "key")
				for _, h := range tb.Hosts[1:4] {
					env := shoalHome(b, "kubo", "flatfs")
					home := strings.TrimPrefix(env[0], "SHOAL_HOME=")
					if err := os.WriteFile(filepath.Join(home, "group.key"), []byte(key+"\n"), 0o600); err != nil {
						b.Fatal(err)
					}
					args := append(listen(h), "--group", "bench", "--peer", o.addr)
					if len(members) > 0 {
						args = append(args, "--peer", peers[len(peers)-1])
					}
					d := startShoalDaemon(b, env, &h, args...)
					members = append(members, env)
					peers = append(peers, "--peer", d.addr)
				}
				run(b, members[0], shoalBin, "shard", root, "--replicas", "1")
				waitSpread(b, members[0], root)
				o.stop()
			}
			for b.Loop() {
				b.StopTimer()
				home := shoalHome(b, "kubo", "flatfs")[0][len("SHOAL_HOME="):]
				dir := filepath.Join(b.TempDir(), "oci")
				args := append([]string{"--home", home, "pull", root, "--to", "oci:" + dir + ":bookworm", "--timeout", "60s"}, peers...)
				cmd := argv(&puller, shoalBin, args...)
				b.StartTimer()
				run(b, nil, cmd[0], cmd[1:]...)
			}
			b.ReportMetric(float64(size)/(1<<20), "image-MiB")
		})
	}
}

// waitSpread waits until the group of the daemon at env keeps every chunk
// of root on some member, three members in all.
func waitSpread(b *testing.B, env []string, root string) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		var st struct {
			Chunks, Covered int
			Members         []json.RawMessage
		}
		out := output(b, env, shoalBin, "status", root, "--json")
		if json.Unmarshal([]byte(out), &st) == nil && len(st.Members) == 3 && st.Covered == st.Chunks {
			return
		}
		time.Sleep(time.Second)
	}
	b.Fatal("the image never spread over the group")
}
