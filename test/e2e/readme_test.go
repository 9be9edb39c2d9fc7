package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// quickStart is one command line of the README's quick start, and the
// node it runs on ("" for the machine itself: the build).
type quickStart struct {
	node, line string
}

// readQuickStart extracts the command lines of the first sh block under
// "## Quick start" in README.md. A comment that names node A or B says
// where the lines after it run; comments at the end of a line go.
func readQuickStart(t *testing.T) []quickStart {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []quickStart
	section, block, node := false, false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = line == "## Quick start"
		case !section:
		case strings.HasPrefix(line, "```"):
			if block {
				return out
			}
			block = line == "```sh"
		case !block:
		case strings.HasPrefix(strings.TrimSpace(line), "#"):
			if strings.Contains(line, "node A") {
				node = "A"
			} else if strings.Contains(line, "node B") || strings.Contains(line, "B's") {
				node = "B"
			}
		default:
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i]
			}
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, quickStart{node, line})
			}
		}
	}
	t.Fatalf("README.md has no sh block under ## Quick start")
	return nil
}

// TestReadmeQuickStart runs the README's quick start as written, so that
// it cannot drift from what works: node A and node B are two hosts of a
// testbed, each with a home and a working directory of its own. What a
// reader fills in is filled in: the root CID the first push prints for
// bafk..., A's address from `shoal id` for the --peer example, a local
// registry holding Debian for docker.io (the one host on the internet),
// and a layout ./layout (tag v1) in each node's directory.
func TestReadmeQuickStart(t *testing.T) {
	testenv.Root(t)
	steps := readQuickStart(t)
	if len(steps) < 10 {
		t.Fatalf("the quick start has %d command lines: %v", len(steps), steps)
	}
	tb := testbed.ForTest(t, 3, testbed.Link{Rate: "1gbit"})
	up := startDistributionOn(t, tb.Hosts[0])
	push := tb.Hosts[0].Argv("skopeo", "copy", "--dest-tls-verify=false", "oci:"+debianImage(t)+":bookworm", "docker://"+up.host+"/library/debian:bookworm")
	runTool(t, push[0], push[1:]...)
	ctrd := startContainerdFrom(t, debianContainerdDir(t))

	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	type node struct {
		host      testbed.Host
		home, dir string
	}
	nodes := map[string]*node{}
	for name, host := range map[string]testbed.Host{"A": tb.Hosts[1], "B": tb.Hosts[2]} {
		// Short: the home holds unix sockets, whose paths are limited.
		home, err := os.MkdirTemp("", "shoal-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(home) })
		nodes[name] = &node{host: host, home: home, dir: t.TempDir()}
	}
	hello := helloImage(t)
	for _, n := range nodes {
		if err := os.MkdirAll(filepath.Join(n.dir, "layout"), 0o755); err != nil {
			t.Fatal(err)
		}
		copyDir(t, hello, filepath.Join(n.dir, "layout"))
	}

	path := os.Getenv("PATH")
	env := func(n *node) []string {
		return append(os.Environ(), "SHOAL_HOME="+n.home, "PATH="+path,
			"CONTAINERD_ADDRESS="+ctrd.Socket, "CONTAINERD_NAMESPACE=shoal-e2e")
	}
	command := func(n *node, line string) *exec.Cmd {
		if n == nil {
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
			cmd.Dir, cmd.Env = repo, append(os.Environ(), "PATH="+path)
			return cmd
		}
		cmd := n.host.Command(context.Background(), "bash", "-euo", "pipefail", "-c", line)
		cmd.Dir, cmd.Env = n.dir, env(n)
		return cmd
	}
	var root, addrA string
	fill := func(line string) string {
		line = strings.ReplaceAll(line, "docker.io/", up.host+"/")
		if root != "" {
			line = strings.ReplaceAll(line, "bafk...", root)
		}
		if addrA != "" {
			line = strings.ReplaceAll(line, "/ip4/10.0.0.1/tcp/4051/p2p/12D3KooW...", addrA)
		}
		return line
	}
	for i, s := range steps {
		line := fill(s.line)
		n := nodes[s.node]
		if strings.Contains(line, "bafk...") || strings.Contains(line, "12D3KooW...") {
			t.Fatalf("step %d (%s) names a placeholder nothing before it filled: %s", i+1, s.node, s.line)
		}
		switch {
		case line == "export PATH=$PWD/bin:$PATH":
			path = filepath.Join(repo, "bin") + ":" + path
			continue
		case strings.HasSuffix(line, "&"):
			if n == nil {
				t.Fatalf("step %d runs in the background outside a node: %s", i+1, s.line)
			}
			// exec: the daemon is the process the test stops, not a shell.
			cmd := command(n, "exec "+strings.TrimSuffix(line, "&"))
			testproc.Start(t, cmd, 30*time.Second, func(string) bool {
				return daemonAnswers(n.home, repo)
			})
			if s.node == "A" {
				addrA = peerAddressOn(t, n.home, repo, n.host.Addr)
			}
			continue
		}
		start := time.Now()
		out, err := command(n, line).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("README quick start, step %d on %q: %s\n%v\n%s%s", i+1, s.node, line, err, out, stderr)
		}
		t.Logf("%s$ %s (%s)", s.node, line, time.Since(start).Round(time.Millisecond))
		if root == "" && strings.HasPrefix(s.line, "shoal push ") {
			fields := strings.Fields(string(out))
			root = fields[len(fields)-1]
		}
	}
	// The last line pushed team/app:1 into B's store through its registry.
	out, err := command(nodes["B"], "shoal images --json").Output()
	if err != nil || !strings.Contains(string(out), "team/app:1") {
		t.Fatalf("B's images after the quick start: %v\n%s", err, out)
	}
}

// identityOf is what `shoal id --json` says of home's node.
func identityOf(home, repo string) (store.Identity, error) {
	cmd := exec.Command(filepath.Join(repo, "bin", "shoal"), "id", "--json")
	cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
	out, err := cmd.Output()
	var id store.Identity
	if err == nil {
		err = json.Unmarshal(out, &id)
	}
	return id, err
}

// daemonAnswers reports whether a daemon answers on home's socket, its
// registry up.
func daemonAnswers(home, repo string) bool {
	id, err := identityOf(home, repo)
	return err == nil && id.Registry != ""
}

// peerAddressOn is the swarm address of home's daemon on the host address
// addr, with /p2p/ID.
func peerAddressOn(t *testing.T, home, repo, addr string) string {
	t.Helper()
	id, err := identityOf(home, repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range id.Addresses {
		if strings.HasPrefix(a, "/ip4/"+addr+"/tcp/") {
			return a
		}
	}
	t.Fatalf("no TCP address on %s in %v", addr, id.Addresses)
	return ""
}

// TestDemo runs `make demo`'s script, the README's first command on a
// fresh machine, as a user does: it must end with its OK line.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "demo.sh"))
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "demo: OK") {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
	}
}
