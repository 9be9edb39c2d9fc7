// Package e2e runs shoal against real software: kubo, containerd, skopeo.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// kuboBinary is the kubo built by scripts/build-kubo.sh.
func kuboBinary(t *testing.T) string {
	t.Helper()
	return cached(t, "SHOAL_KUBO", "kubo-v0.43.1/ipfs", "", "kubo (scripts/build-kubo.sh)")
}

// cached finds something make test builds once: at $env if set, else at
// rel under ~/.cache/shoal; probe, if given, is a file that must be in it.
// A missing one fails in CI and skips elsewhere.
func cached(t *testing.T, env, rel, probe, what string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "shoal", rel)
	}
	_, err := os.Stat(filepath.Join(p, probe))
	testenv.Need(t, what, err)
	return p
}

// Kubo is a kubo daemon on loopback with its own repo.
type Kubo struct {
	bin, path string
	ID        string
	Addrs     []string
}

func (k *Kubo) run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(k.bin, args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+k.path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ipfs %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

func startKubo(t *testing.T) *Kubo {
	t.Helper()
	k := &Kubo{bin: kuboBinary(t), path: t.TempDir()}
	// The test profile listens on 127.0.0.1 with free ports, bootstraps to
	// nobody and turns mDNS off.
	k.run(t, "init", "--profile=test")
	cmd := exec.Command(k.bin, "daemon", "--offline=false")
	cmd.Env = append(os.Environ(), "IPFS_PATH="+k.path)
	testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
		return strings.Contains(logs, "Daemon is ready")
	})
	var id struct {
		ID        string
		Addresses []string
	}
	if err := json.Unmarshal([]byte(k.run(t, "id")), &id); err != nil {
		t.Fatal(err)
	}
	k.ID, k.Addrs = id.ID, id.Addresses
	return k
}

// tcpAddr is the first loopback TCP address of a peer.
func tcpAddr(t *testing.T, addrs []string) string {
	t.Helper()
	for _, a := range addrs {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") && !strings.Contains(a, "/ws") {
			return a
		}
	}
	t.Fatalf("no loopback TCP address in %v", addrs)
	return ""
}

// startContainerd runs Debian's containerd with its own root, state and
// socket.
func startContainerd(t *testing.T) *containerd.Client {
	t.Helper()
	return startContainerdFrom(t, debianContainerdDir(t)).Client
}

// Containerd is a running containerd and the ctr that speaks to it.
type Containerd struct {
	Client *containerd.Client
	Socket string
	binDir string
	config string // its config file
	proc   *exec.Cmd
	ctr    string
	logs   *testproc.Logs
}

// Ctr runs ctr against this containerd in the tests' namespace.
func (c *Containerd) Ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.ctrCommand(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (c *Containerd) ctrCommand(args ...string) *exec.Cmd {
	return exec.Command(c.ctr, append([]string{"--address", c.Socket, "--namespace", "shoal-e2e"}, args...)...)
}

// startContainerdFrom runs the containerd, ctr and shims in binDir with
// their own root, state and socket, CRI off, and stops them when the test
// ends.
func startContainerdFrom(t *testing.T, binDir string) *Containerd {
	t.Helper()
	return startContainerdWith(t, binDir, func(root, state, sock string) string {
		return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, root, state, sock, sock+".ttrpc")
	})
}

// startContainerdWith runs containerd with the config that config writes
// for its root, state and socket.
func startContainerdWith(t *testing.T, binDir string, config func(root, state, sock string) string) *Containerd {
	t.Helper()
	testenv.Root(t)
	dir, err := os.MkdirTemp("", "shoal-ctrd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := config(filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Socket: sock, binDir: binDir, config: cfgPath, ctr: filepath.Join(binDir, "ctr")}
	c.start(t)
	return c
}

func (c *Containerd) start(t *testing.T) {
	t.Helper()
	_ = os.Remove(c.Socket)
	cmd := exec.Command(filepath.Join(c.binDir, "containerd"), "--config", c.config)
	// Its shims are found on PATH: those built with it come first.
	cmd.Env = append(os.Environ(), "PATH="+c.binDir+":"+os.Getenv("PATH"))
	c.proc = cmd
	c.logs = testproc.Start(t, cmd, 30*time.Second, func(string) bool {
		_, err := os.Stat(c.Socket)
		return err == nil
	})
	client, err := containerd.New(c.Socket, containerd.WithDefaultNamespace("shoal-e2e"))
	if err != nil {
		t.Fatalf("containerd client: %v\n%s", err, c.logs.String())
	}
	t.Cleanup(func() { client.Close() })
	c.Client = client
}

// restart stops containerd and starts it again on the same root.
func (c *Containerd) restart(t *testing.T) {
	t.Helper()
	c.Client.Close()
	testproc.Stop(c.proc)
	c.start(t)
}

// containerd2Dir is where scripts/build-containerd.sh put containerd 2.x.
func containerd2Dir(t *testing.T) string {
	t.Helper()
	return cached(t, "SHOAL_CONTAINERD2", "containerd-v2.4.2", "containerd", "containerd 2.x (scripts/build-containerd.sh)")
}

// shoalNode is an embedded shoal node on loopback.
func shoalNode(t *testing.T, peers ...string) *node.Node {
	t.Helper()
	home := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Swarm.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Swarm.MDNS = false
	if _, err := config.Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(context.Background(), home, node.Options{Online: true, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func namespacesCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, "shoal-e2e")
}

// shoalBinary builds the shoal command once per test binary, from the
// main module, into a directory TestMain removes.
func shoalBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		bin := filepath.Join(binDir, "shoal")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/shoal")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build shoal: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "shoal-e2e-bin-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
