package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// netns makes two network namespaces joined by a veth pair, so that
// multicast stays between the two test hosts, and removes them after.
func netns(t *testing.T) (a, b, addrA, addrB string) {
	t.Helper()
	testenv.Root(t)
	testenv.Tool(t, "ip")
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	a, b = "shoal-a-"+id, "shoal-b-"+id
	addrA, addrB = "10.123.45.1", "10.123.45.2"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", a).Run()
		_ = exec.Command("ip", "netns", "del", b).Run()
	})
	ip("netns", "add", a)
	ip("netns", "add", b)
	ip("link", "add", "va"+id, "netns", a, "type", "veth", "peer", "name", "vb"+id, "netns", b)
	ip("-n", a, "addr", "add", addrA+"/24", "dev", "va"+id)
	ip("-n", b, "addr", "add", addrB+"/24", "dev", "vb"+id)
	for _, ns := range []string{a, b} {
		ip("-n", ns, "link", "set", "lo", "up")
	}
	ip("-n", a, "link", "set", "va"+id, "up", "multicast", "on")
	ip("-n", b, "link", "set", "vb"+id, "up", "multicast", "on")
	// mDNS announces once at start and a browser stops asking once it
	// hears any answer (its own included): the link must carry packets
	// before the daemons start. A loaded machine takes a moment to see
	// the carrier.
	deadline := time.Now().Add(10 * time.Second)
	for _, end := range [][2]string{{a, "va" + id}, {b, "vb" + id}} {
		for {
			out, err := exec.Command("ip", "-n", end[0], "-o", "link", "show", "dev", end[1]).Output()
			if err == nil && strings.Contains(string(out), "UP,LOWER_UP") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s has no carrier: %v %s", end[1], end[0], err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return a, b, addrA, addrB
}

// TestMDNSFindsPeersOnTheLink: a node pulls an image from a daemon it was
// never told about, found by mDNS on the link between two namespaces.
func TestMDNSFindsPeersOnTheLink(t *testing.T) {
	nsA, nsB, addrA, addrB := netns(t)
	bin := shoalBinary(t)
	homeA, homeB := t.TempDir(), t.TempDir()
	inNS := func(ns, home string, args ...string) *exec.Cmd {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
		cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
		return cmd
	}
	mustNS := func(ns, home string, args ...string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := inNS(ns, home, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("shoal %v in %s: %v\n%s", args, ns, err, stderr.String())
		}
		return string(out)
	}
	mustNS(nsA, homeA, "init", "--listen", "/ip4/"+addrA+"/tcp/0", "--registry-listen=")
	mustNS(nsB, homeB, "init", "--listen", "/ip4/"+addrB+"/tcp/0", "--registry-listen=")

	// Both nodes run daemons: mDNS announces at start and answers
	// queries, and a long-running node keeps browsing.
	for _, d := range []struct{ ns, home string }{{nsA, homeA}, {nsB, homeB}} {
		testproc.Start(t, inNS(d.ns, d.home, "daemon"), 20*time.Second, func(string) bool {
			return strings.Contains(mustNSQuiet(inNS(d.ns, d.home, "id")), "/p2p/")
		})
	}
	layout := testimage.IndexLayout(t, 21, 1<<20, 50<<10)
	out := strings.TrimSpace(mustNS(nsA, homeA, "push", "oci:"+layout+":v1"))
	root := out[strings.LastIndex(out, "\n")+1:]

	dest := filepath.Join(t.TempDir(), "out")
	mustNS(nsB, homeB, "pull", root, "--to", "oci:"+dest, "--timeout", "90s")
	if _, err := os.Stat(filepath.Join(dest, "index.json")); err != nil {
		t.Fatal(err)
	}
}

func mustNSQuiet(cmd *exec.Cmd) string {
	out, _ := cmd.Output()
	return string(out)
}
