package bench

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shapedLink makes a network namespace joined to this one by a veth pair
// whose both ends are shaped to rate, and removes it when the benchmark
// ends. It returns the namespace and its address. The rate is a token
// bucket (tbf): this machine's kernel has no netem, so no delay is added.
func shapedLink(b *testing.B, rate string) (ns, addr string) {
	b.Helper()
	if _, err := exec.LookPath("tc"); err != nil {
		b.Skip("tc (iproute2) is needed")
	}
	ns, host, peer := "shoal-bench", "sbench0", "sbench1"
	sh := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", ns).Run() // left by an interrupted run
	_ = exec.Command("ip", "link", "del", host).Run()
	sh("ip", "netns", "add", ns)
	b.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	sh("ip", "link", "set", peer, "netns", ns)
	sh("ip", "addr", "add", "10.201.0.1/24", "dev", host)
	sh("ip", "link", "set", host, "up")
	sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.201.0.2/24", "dev", peer)
	sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	tbf := []string{"root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"}
	sh(append([]string{"tc", "qdisc", "add", "dev", host}, tbf...)...)
	sh(append([]string{"ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", peer}, tbf...)...)
	return ns, "10.201.0.2"
}

// BenchmarkLazyStartShaped is BenchmarkLazyStart with the peer behind a
// link shaped to 100 Mbit/s each way.
func BenchmarkLazyStartShaped(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces, mounting and chroot need root")
	}
	_, size := imageBlobs(b)
	origin, addr := shapedOrigin(b, "100mbit")
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
	lazyStart(b, root, addr, size)
}

// shapedOrigin runs a shoal daemon behind a link shaped to rate, and
// returns its home and swarm address.
func shapedOrigin(b *testing.B, rate string) (env []string, addr string) {
	b.Helper()
	ns, ip := shapedLink(b, rate)
	origin := shoalHome(b, "kubo", "flatfs")
	home := strings.TrimPrefix(origin[0], "SHOAL_HOME=")
	daemon(b, origin, func() bool {
		_, err := os.Stat(filepath.Join(home, "shoal.sock"))
		return err == nil
	}, "ip", "netns", "exec", ns, shoalBin, "daemon", "--no-mdns", "--listen", "/ip4/"+ip+"/tcp/4077", "--registry-listen=")
	var id struct{ ID string }
	if err := json.Unmarshal([]byte(output(b, origin, shoalBin, "id", "--json")), &id); err != nil {
		b.Fatal(err)
	}
	return origin, "/ip4/" + ip + "/tcp/4077/p2p/" + id.ID
}
