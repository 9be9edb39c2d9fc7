package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// TestMDNSFindsPeersOnTheLink: a node pulls an image from a daemon it was
// never told about, found by mDNS on the network between two namespaces.
func TestMDNSFindsPeersOnTheLink(t *testing.T) {
	// Two hosts on the testbed's switch, which carries multicast between
	// them and nowhere else.
	tb := testbed.ForTest(t, 2, testbed.Link{})
	nsA, nsB := tb.Hosts[0], tb.Hosts[1]
	addrA, addrB := nsA.Addr, nsB.Addr
	bin := shoalBinary(t)
	homeA, homeB := t.TempDir(), t.TempDir()
	inNS := func(h testbed.Host, home string, args ...string) *exec.Cmd {
		cmd := h.Command(context.Background(), bin, args...)
		cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
		return cmd
	}
	mustNS := func(h testbed.Host, home string, args ...string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := inNS(h, home, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("shoal %v on %s: %v\n%s", args, h.Name, err, stderr.String())
		}
		return string(out)
	}
	mustNS(nsA, homeA, "init", "--listen", "/ip4/"+addrA+"/tcp/0", "--registry-listen=")
	mustNS(nsB, homeB, "init", "--listen", "/ip4/"+addrB+"/tcp/0", "--registry-listen=")

	// Both nodes run daemons: mDNS announces at start and answers
	// queries, and a long-running node keeps browsing.
	for _, d := range []struct {
		ns   testbed.Host
		home string
	}{{nsA, homeA}, {nsB, homeB}} {
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
