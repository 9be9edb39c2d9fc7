package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// shoalDaemon is a `shoal daemon` process with a home of its own, serving
// its registry on a free loopback port.
type shoalDaemon struct {
	bin, home string
	args      []string
	env       []string // more environment for its commands ($SHOAL_IPFS_API, say)
	Peer      string   // its swarm address
	Registry  string   // host:port of its registry
	// Containerd is the socket of its containerd plugins (as root).
	Containerd string
	host       *testbed.Host // the testbed host it runs on, if any
	proc       *exec.Cmd
	logs       *testproc.Logs
}

func startShoalDaemon(t *testing.T, args ...string) *shoalDaemon {
	t.Helper()
	d := newShoalHome(t, "/ip4/127.0.0.1/tcp/0", args)
	d.start(t)
	return d
}

// startShoalDaemonOn runs a daemon on a testbed host, its swarm on the
// host's address.
func startShoalDaemonOn(t *testing.T, host testbed.Host, args ...string) *shoalDaemon {
	t.Helper()
	d := newShoalHome(t, "/ip4/"+host.Addr+"/tcp/4051", args)
	d.host = &host
	d.start(t)
	return d
}

func newShoalHome(t *testing.T, listen string, args []string) *shoalDaemon {
	t.Helper()
	// Short: the home holds unix sockets, whose paths are limited.
	home, err := os.MkdirTemp("", "shoal-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	return newShoalHomeAt(t, home, listen, args)
}

// newShoalHomeAt is newShoalHome in a directory of the caller's.
func newShoalHomeAt(t *testing.T, home, listen string, args []string) *shoalDaemon {
	t.Helper()
	d := &shoalDaemon{bin: shoalBinary(t), home: home, args: args}
	d.run(t, "init", "--mdns=false", "--listen", listen, "--registry-listen", "127.0.0.1:0")
	return d
}

func (d *shoalDaemon) start(t *testing.T) {
	t.Helper()
	args := append([]string{"daemon", "--no-mdns"}, d.args...)
	cmd := exec.Command(d.bin, args...)
	if d.host != nil {
		cmd = d.host.Command(context.Background(), d.bin, args...)
	}
	cmd.Env = append(os.Environ(), "SHOAL_HOME="+d.home)
	d.proc = cmd
	d.logs = testproc.Start(t, cmd, 30*time.Second, func(string) bool {
		out, err := d.command("id", "--json").Output()
		var id struct {
			Addresses  []string
			Registry   string
			Containerd string
		}
		if err != nil || json.Unmarshal(out, &id) != nil || len(id.Addresses) == 0 || id.Registry == "" {
			return false
		}
		d.Peer, d.Registry, d.Containerd = id.Addresses[0], id.Registry, id.Containerd
		return true
	})
}

// restart stops the daemon as its service manager would, and starts it
// again on the same home.
func (d *shoalDaemon) restart(t *testing.T) {
	t.Helper()
	testproc.Stop(d.proc)
	d.start(t)
}

func (d *shoalDaemon) command(args ...string) *exec.Cmd {
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(append(os.Environ(), "SHOAL_HOME="+d.home), d.env...)
	return cmd
}

func (d *shoalDaemon) run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := d.command(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("shoal %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// TestRegistryConformance runs the OCI distribution-spec conformance suite
// against a daemon's registry, for the stable spec (1.1) and for the
// development one (upload cancel, tag parameters, digest headers required).
func TestRegistryConformance(t *testing.T) {
	bin := filepath.Join(binDir, "conformance")
	build := exec.Command("go", "build", "-o", bin, "github.com/opencontainers/distribution-spec/conformance")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the conformance suite: %v\n%s", err, out)
	}
	d := startShoalDaemon(t)
	summary := regexp.MustCompile(`(?m)^(OCI Conformance Result: .*|  (Disabled|Skip|Pass|FAIL|Error|Total)\.+: +\d+)$`)
	for _, version := range []string{"1.1", "dev"} {
		t.Run(version, func(t *testing.T) {
			results := t.TempDir()
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(),
				"OCI_REGISTRY="+d.Registry, "OCI_TLS=disabled", "OCI_VERSION="+version,
				"OCI_RESULTS_DIR="+results, "OCI_REPO1=conformance/"+version+"/one", "OCI_REPO2=conformance/"+version+"/two")
			out, err := cmd.CombinedOutput()
			lines := strings.Join(summary.FindAllString(string(out), -1), "\n")
			t.Logf("conformance %s against %s:\n%s", version, d.Registry, lines)
			if err != nil || !strings.Contains(lines, "Result: Pass") {
				t.Fatalf("conformance suite: %v\n%s", err, out)
			}
		})
	}
}

// TestSkopeoPushesToOneNodeAndPullsByCIDFromAnother: skopeo copies a
// multi-platform image to node A's registry; node B, whose only peer is A,
// pulls it by the root CID A reports, with shoal and with skopeo through
// B's registry.
func TestSkopeoPushesToOneNodeAndPullsByCIDFromAnother(t *testing.T) {
	testenv.Tool(t, "skopeo")
	a := startShoalDaemon(t)
	layout := testimage.IndexLayout(t, 31, 2<<20, 70<<10)
	runTool(t, "skopeo", "copy", "--all", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+a.Registry+"/team/app:1")
	var imgs []struct{ CID, Source string }
	if err := json.Unmarshal([]byte(a.run(t, "images", "--json")), &imgs); err != nil {
		t.Fatal(err)
	}
	var root string
	for _, img := range imgs {
		if img.Source == a.Registry+"/team/app:1" {
			root = img.CID
		}
	}
	if root == "" {
		t.Fatalf("A does not list the pushed image: %+v", imgs)
	}

	b := startShoalDaemon(t, "--peer", a.Peer)
	viaSkopeo := filepath.Join(t.TempDir(), "skopeo")
	runTool(t, "skopeo", "copy", "--all", "--src-tls-verify=false", "docker://"+b.Registry+"/ipfs/"+root, "oci:"+viaSkopeo+":v1")
	testimage.Validate(t, viaSkopeo)
	viaShoal := filepath.Join(t.TempDir(), "shoal")
	b.run(t, "pull", root, "--to", "oci:"+viaShoal, "--timeout", "60s")
	testimage.Validate(t, viaShoal)
}
