package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/spf13/cobra"
)

var shoalBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-cli-test-")
	if err != nil {
		panic(err)
	}
	shoalBin = filepath.Join(dir, "shoal")
	if out, err := exec.Command("go", "build", "-o", shoalBin, ".").CombinedOutput(); err != nil {
		panic("build shoal: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, home string, args ...string) result {
	t.Helper()
	cmd := exec.Command(shoalBin, args...)
	cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func mustRun(t *testing.T, home string, args ...string) string {
	t.Helper()
	r := run(t, home, args...)
	if r.code != 0 {
		t.Fatalf("shoal %v: exit %d\n%s", args, r.code, r.stderr)
	}
	return r.stdout
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// startDaemon runs `shoal daemon` on loopback and returns its first address.
func startDaemon(t *testing.T, home string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	mustRun(t, home, "init", "--mdns=false")
	cmd := exec.Command(shoalBin, append([]string{"daemon", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--registry-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := run(t, home, "id", "--json")
		var id struct {
			ID        string
			Addresses []string
		}
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &id) == nil && len(id.Addresses) > 0 {
			return cmd, id.Addresses[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("daemon did not come up:\n%s", logs.String())
	return nil, ""
}

func writeImage(t *testing.T) string {
	t.Helper()
	return testimage.IndexLayout(t, 7, 2<<20, 100<<10)
}

func TestDaemonPushThenPullFromASecondNode(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	_, addr := startDaemon(t, a)
	mustRun(t, b, "init", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0")
	layout := writeImage(t)

	root := lastLine(mustRun(t, a, "push", "oci:"+layout+":v1"))
	if again := lastLine(mustRun(t, a, "push", "oci:"+layout+":v1")); again != root {
		t.Fatalf("second push gave %s, first %s", again, root)
	}
	var imgs []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, a, "images", "--json")), &imgs); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 {
		t.Fatalf("images: %v", imgs)
	}
	for _, k := range []string{"CID", "Source", "Platforms", "Size", "Created"} {
		if _, ok := imgs[0][k]; !ok {
			t.Fatalf("images --json lacks %s: %v", k, imgs[0])
		}
	}
	if imgs[0]["CID"] != root || imgs[0]["Source"] != "oci:"+layout+":v1" {
		t.Fatalf("image record %v", imgs[0])
	}

	out := filepath.Join(t.TempDir(), "out")
	mustRun(t, b, "pull", "ipfs://"+root, "--peer", addr, "--to", "oci:"+out+":pulled", "--timeout", "30s")
	if _, err := os.Stat(filepath.Join(out, "index.json")); err != nil {
		t.Fatal(err)
	}
	var tree struct{ Children []struct{ Role string } }
	if err := json.Unmarshal([]byte(mustRun(t, b, "inspect", root, "--json")), &tree); err != nil || tree.Children[0].Role != "index" {
		t.Fatalf("inspect: %v %+v", err, tree)
	}

	mustRun(t, a, "rm", root)
	if gc := mustRun(t, a, "gc"); !strings.Contains(gc, "removed") {
		t.Fatalf("gc said %q", gc)
	}
	if r := run(t, a, "rm", root); r.code != errkind.ExitNotFound || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("rm of a removed image: exit %d, %s", r.code, r.stderr)
	}
}

// TestPullThroughTheDaemon: with a daemon running on B, `shoal pull` asks
// it, and it fetches from its peer A.
func TestPullThroughTheDaemon(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	_, addrA := startDaemon(t, a)
	root := lastLine(mustRun(t, a, "push", "oci:"+writeImage(t)+":v1"))
	startDaemon(t, b)
	// A peer given by a name without its ID: the daemon learns who is there.
	port := regexp.MustCompile(`/tcp/([0-9]+)`).FindStringSubmatch(tcpAddr(t, a, addrA))[1]
	out := filepath.Join(t.TempDir(), "out")
	mustRun(t, b, "pull", root, "--peer", "/dns4/localhost/tcp/"+port, "--to", "oci:"+out, "--timeout", "30s")
	if _, err := os.Stat(filepath.Join(out, "index.json")); err != nil {
		t.Fatal(err)
	}
	// The layer came as one stream into a pack of B's daemon, which the
	// command linked into the layout rather than copying.
	blobs, _ := filepath.Glob(filepath.Join(out, "blobs", "sha256", "*"))
	links := 0
	for _, p := range blobs {
		if fi, err := os.Stat(p); err == nil && fi.Sys().(*syscall.Stat_t).Nlink > 1 {
			links++
		}
	}
	if links == 0 {
		t.Errorf("none of the layout's %d blobs is a link to the daemon's packs", len(blobs))
	}
	if imgs := mustRun(t, b, "images"); !strings.Contains(imgs, root) {
		t.Fatalf("B's daemon does not list %s:\n%s", root, imgs)
	}
}

// tcpAddr is the TCP address among the swarm addresses of the daemon on
// home; first is the one startDaemon returned.
func tcpAddr(t *testing.T, home, first string) string {
	t.Helper()
	if strings.Contains(first, "/tcp/") {
		return first
	}
	var id struct{ Addresses []string }
	if err := json.Unmarshal([]byte(mustRun(t, home, "id", "--json")), &id); err != nil {
		t.Fatal(err)
	}
	for _, a := range id.Addresses {
		if strings.Contains(a, "/tcp/") {
			return a
		}
	}
	t.Fatalf("the daemon listens on no TCP address: %v", id.Addresses)
	return ""
}

// TestDaemonServesTheRegistry: an OCI client pushes to A's registry and
// the image is listed on A; B's registry serves it by CID from A's blocks.
func TestDaemonServesTheRegistry(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	_, addrA := startDaemon(t, a)
	regA := registryOf(t, a)
	img, err := testimage.Image(5, testimage.Platforms[0], 1<<20, 4000)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, regA+"/app:1"), img); err != nil {
		t.Fatal(err)
	}
	var imgs []struct{ CID, Source string }
	if err := json.Unmarshal([]byte(mustRun(t, a, "images", "--json")), &imgs); err != nil || len(imgs) != 1 || imgs[0].Source != regA+"/app:1" {
		t.Fatalf("A's images after a registry push: %+v %v", imgs, err)
	}
	root := imgs[0].CID

	startDaemon(t, b, "--peer", addrA)
	pulled, err := remote.Image(mustRef(t, registryOf(t, b)+"/ipfs/"+root))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(pulled); err != nil {
		t.Fatalf("image pulled by CID from B's registry: %v", err)
	}

	res, err := http.Get("http://" + registryOf(t, b) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics, _ := io.ReadAll(res.Body)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`shoal_registry_requests_total\{code="200",method="GET",route="blob"\} [1-9]`),
		regexp.MustCompile(`shoal_registry_sent_bytes_total\{route="blob"\} [1-9]`),
		regexp.MustCompile(`shoal_fetched_bytes_total\{protocol="gateway"\} [1-9]`),
		regexp.MustCompile(`shoal_blob_reads_total\{from="peers"\} [1-9]`),
	} {
		if !want.Match(metrics) {
			t.Errorf("B's metrics lack %s", want)
		}
	}
}

func registryOf(t *testing.T, home string) string {
	t.Helper()
	var id struct{ Registry string }
	if err := json.Unmarshal([]byte(mustRun(t, home, "id", "--json")), &id); err != nil || id.Registry == "" {
		t.Fatalf("no registry address in id --json: %v", err)
	}
	return id.Registry
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKilledDaemonLeavesNothingInTheWay(t *testing.T) {
	home := t.TempDir()
	cmd, _ := startDaemon(t, home)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The socket is still there; commands fall back to the store, whose
	// lock died with the daemon.
	mustRun(t, home, "images")
	startDaemon(t, home)
	mustRun(t, home, "images")
}

func TestBadInput(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false")
	empty := t.TempDir()
	corrupt := writeImage(t)
	// Flip a byte of the biggest blob.
	blobs, _ := filepath.Glob(filepath.Join(corrupt, "blobs", "sha256", "*"))
	var biggest string
	var size int64
	for _, b := range blobs {
		if fi, _ := os.Stat(b); fi.Size() > size {
			biggest, size = b, fi.Size()
		}
	}
	data, _ := os.ReadFile(biggest)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(biggest, data, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"push", "nosuch:thing"}, 2, "unknown transport"},
		{[]string{"push", "oci:" + empty}, 2, "not a valid OCI image layout"},
		{[]string{"push", "oci:" + corrupt + ":v1"}, 6, "does not match"},
		{[]string{"push", "oci:" + corrupt + ":nosuchtag"}, 3, "no image tagged"},
		{[]string{"pull", "notacid", "--to", "oci:" + empty}, 2, "not a CID"},
		{[]string{"pull", "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4"}, 2, "--to"},
		{[]string{"pull", "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4", "--to", "tar:x"}, 2, "unknown transport"},
		{[]string{"pull", "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4", "--to", "oci:" + filepath.Join(empty, "o"), "--timeout", "1s"}, 5, "no peer sent the content in time"},
		{[]string{"push", "--platform", "linux", "oci:" + empty}, 2, "os/arch"},
		{[]string{"inspect", "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4", "--timeout", "1s"}, 5, "no peer sent the content in time"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"pull", "bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4", "--to", "containerd:debian:12"}, 4, "needs a running shoal daemon"},
		{[]string{"containerd", "config", "--version", "1"}, 2, "config versions are 2"},
		{[]string{"containerd", "config", "--write"}, 2, "--write and --remove go with"},
		{[]string{"containerd", "config", "--runtime", "shoal", "--write", "--remove"}, 2, "not both"},
	} {
		r := run(t, home, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("shoal %v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
	if out := mustRun(t, home, "images", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("failed commands left images: %s", out)
	}
	if _, err := os.Stat(filepath.Join(empty, "o", "index.json")); err == nil {
		t.Fatal("a failed pull left an index.json")
	}
}

func TestContainerdConfigNamesTheHomesSockets(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false", "--registry-listen", "127.0.0.1:5999")
	for version, want := range map[string][]string{
		"3": {"version = 3", `address = "` + filepath.Join(home, "containerd.sock") + `"`, `root = "` + filepath.Join(home, "snapshotter") + `"`,
			`enable_remote_snapshot_annotations = "true"`, "unpack_config", "io.containerd.cri.v1.images", "127.0.0.1:5999/hosts.toml"},
		"2": {"version = 2", `address = "` + filepath.Join(home, "containerd.sock") + `"`, `[plugins."io.containerd.grpc.v1.cri".containerd]`, "disable_snapshot_annotations = false"},
	} {
		out := mustRun(t, home, "containerd", "config", "--version", version)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("version %s: no %q in\n%s", version, w, out)
			}
		}
	}
}

// TestContainerdRuntimeDropIn: --runtime writes the drop-in in the node's
// config version, the node's default runtime on shoal's snapshotter, and
// --remove takes it away.
func TestContainerdRuntimeDropIn(t *testing.T) {
	home, dir := t.TempDir(), t.TempDir()
	mustRun(t, home, "init", "--mdns=false")
	node := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(node, []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(dir, "conf.d", "shoal.toml")
	args := []string{"containerd", "config", "--runtime", "lazy", "--containerd-config", node, "--drop-in", dropIn}
	if out := mustRun(t, home, append(args, "--write")...); !strings.Contains(out, "wrote "+dropIn) {
		t.Fatalf("--write said %q", out)
	}
	data, err := os.ReadFile(dropIn)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version = 2", `runtimes.lazy]`, `snapshotter = "shoal"`, "SystemdCgroup = true", `address = "` + filepath.Join(home, "containerd.sock") + `"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("no %q in the drop-in:\n%s", want, data)
		}
	}
	if out := mustRun(t, home, append(args, "--write")...); !strings.Contains(out, "unchanged") {
		t.Errorf("writing the same again said %q", out)
	}
	mustRun(t, home, append(args, "--remove")...)
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Fatalf("the drop-in is still there: %v", err)
	}
}

// TestGroupMembersProveTheKey: a daemon refuses --group without a group
// key, or with one others may read; two daemons with the same key shard an
// image between them, and a third, in the same group by name but with
// another key, is no member.
func TestGroupMembersProveTheKey(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	key := mustRun(t, a, "group", "key")
	if other := mustRun(t, a, "group", "key"); other == key {
		t.Fatal("two group keys alike")
	}
	mustRun(t, a, "init", "--mdns=false")
	refused := func(want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, shoalBin, "daemon", "--no-mdns", "--group", "builders", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen", "")
		cmd.Env = append(os.Environ(), "SHOAL_HOME="+a)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("daemon --group: %v, %s; want a refusal saying %q", err, out, want)
		}
	}
	refused("shoal group key")
	if err := os.WriteFile(filepath.Join(a, "group.key"), []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("chmod 600")

	if err := os.Chmod(filepath.Join(a, "group.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "group.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c, "group.key"), []byte(mustRun(t, c, "group", "key")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := startDaemon(t, a, "--group", "builders")
	startDaemon(t, b, "--group", "builders", "--peer", addr)
	startDaemon(t, c, "--group", "builders", "--peer", addr)
	root := lastLine(mustRun(t, a, "push", "oci:"+writeImage(t)+":v1"))

	if out := mustRun(t, a, "shard", root, "--replicas", "1"); !strings.Contains(out, "sharded") {
		t.Fatalf("shard said %q", out)
	}
	var st struct {
		Members []struct{ Peer string }
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if json.Unmarshal([]byte(mustRun(t, a, "status", root, "--json")), &st) == nil && len(st.Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: %+v, want the two holding the key", st.Members)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // c would have joined, and learnt the record, by now
	idC := strings.SplitN(mustRun(t, c, "id"), "\n", 2)[0]
	_ = json.Unmarshal([]byte(mustRun(t, a, "status", root, "--json")), &st)
	for _, m := range st.Members {
		if m.Peer == idC {
			t.Errorf("the daemon with another key counts as a member: %+v", st.Members)
		}
	}
	if r := run(t, c, "status", root); r.code == 0 || !strings.Contains(r.stderr, "not sharded") {
		t.Errorf("status on the daemon with another key: exit %d, %s%s; want the image unknown to it", r.code, r.stdout, r.stderr)
	}
}

// A second daemon on a home whose daemon runs is refused by asking that
// daemon, not after waiting for the store's lock.
func TestSecondDaemonOnAHomeIsRefusedAtOnce(t *testing.T) {
	home := t.TempDir()
	startDaemon(t, home)
	r := run(t, home, "daemon", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "running on this home already") {
		t.Fatalf("second daemon: exit %d\n%s", r.code, r.stderr)
	}
}

// shoal version and --version say the version, the commit, Go's version
// and the hashing path.
func TestVersion(t *testing.T) {
	home := t.TempDir()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := mustRun(t, home, args...)
		for _, want := range []string{"shoal ", "commit:", "go:      go1.", "hashing:"} {
			if !strings.Contains(out, want) {
				t.Errorf("shoal %v: no %q in\n%s", args, want, out)
			}
		}
	}
}

// Flag usages render as written: pflag would take a backquoted word for
// the argument's name.
func TestHelpShowsFlagsAsWritten(t *testing.T) {
	out := mustRun(t, t.TempDir(), "id", "--help")
	if strings.Contains(out, "--json ipfs") {
		t.Fatalf("shoal id --help:\n%s", out)
	}
}

// init on a home made before refuses flags that would change it, and
// takes those that agree with it.
func TestInitAgainRefusesNewFlags(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "pull", "--help") // any command; none initialises on --help
	mustRun(t, home, "images")         // initialises with the defaults
	r := run(t, home, "init", "--layout", "unixfs-v1-2025")
	if r.code == 0 || !strings.Contains(r.stderr, "--layout unixfs-v1-2025 (the home has kubo)") {
		t.Fatalf("init --layout on an initialised home: exit %d\n%s", r.code, r.stderr)
	}
	mustRun(t, home, "init", "--layout", "kubo")
}

// A malformed --peer is a usage error: exit 2.
func TestMalformedPeerIsAUsageError(t *testing.T) {
	r := run(t, t.TempDir(), "pull", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "--peer", "not-a-multiaddr", "--to", "oci:"+t.TempDir()+":v1")
	if r.code != 2 || !strings.Contains(r.stderr, "--peer") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}

// A daemon whose swarm port another daemon holds refuses to start, naming
// the address, rather than share the port.
func TestDaemonRefusesATakenSwarmPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	startDaemon(t, t.TempDir(), "--listen", addr)
	other := t.TempDir()
	mustRun(t, other, "init", "--mdns=false")
	r := run(t, other, "daemon", "--no-mdns", "--listen", addr, "--registry-listen", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, addr) {
		t.Fatalf("a second daemon on %s: exit %d\n%s", addr, r.code, r.stderr)
	}
}

// --log-format json writes one JSON object a line; a format or level it
// does not know is a usage error.
func TestLogFormat(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shoalBin, "--log-format", "json", "daemon", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--registry-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		if rec["level"] == nil || rec["msg"] == nil {
			t.Fatalf("no level or msg: %s", sc.Text())
		}
		if rec["msg"] == "shoal daemon running" {
			break
		}
	}
	if sc.Err() != nil || ctx.Err() != nil {
		t.Fatalf("the daemon did not say it runs: %v %v", sc.Err(), ctx.Err())
	}
	for _, args := range [][]string{{"--log-format", "yaml", "images"}, {"--log-level", "loud", "images"}} {
		if r := run(t, home, args...); r.code != 2 {
			t.Errorf("shoal %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
}

// id, push, pull, rm and gc print one JSON object with --json, its fields
// as their help says; id without a daemon says where one will listen.
func TestJSONOutput(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false", "--listen", "/ip4/127.0.0.1/tcp/0")
	decode := func(out string, v any) {
		t.Helper()
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		if dec.More() {
			t.Fatalf("more than one object in %q", out)
		}
	}
	var id struct {
		ID        string
		Addresses []string
		Listen    []string
	}
	decode(mustRun(t, home, "id", "--json"), &id)
	if len(id.Addresses) != 0 || len(id.Listen) != 1 || id.Listen[0] != "/ip4/127.0.0.1/tcp/0/p2p/"+id.ID {
		t.Errorf("id --json without a daemon: %+v", id)
	}
	var push struct {
		Root, Source string
		Platforms    []string
		Size         int64
		Seconds      float64
	}
	layout := writeImage(t)
	decode(mustRun(t, home, "push", "--json", "oci:"+layout+":v1"), &push)
	if push.Root == "" || push.Source != "oci:"+layout+":v1" || len(push.Platforms) == 0 || push.Size == 0 {
		t.Errorf("push --json: %+v", push)
	}
	var pull struct {
		Root, Destination, Digest string
		Platforms                 []string
		Size                      int64
		Seconds                   float64
	}
	out := "oci:" + filepath.Join(t.TempDir(), "out") + ":v1"
	decode(mustRun(t, home, "pull", "--json", push.Root, "--to", out), &pull)
	if pull.Root != push.Root || pull.Destination != out || !strings.HasPrefix(pull.Digest, "sha256:") || pull.Size != push.Size {
		t.Errorf("pull --json: %+v (push %+v)", pull, push)
	}
	var rm struct{ Removed []string }
	decode(mustRun(t, home, "rm", "--json", push.Root), &rm)
	if len(rm.Removed) != 1 || rm.Removed[0] != push.Root {
		t.Errorf("rm --json: %+v", rm)
	}
	var gc struct {
		Blocks  int
		Bytes   int64
		Kept    int
		Damaged []struct{ Blob, Block, Err string }
		Spared  bool
	}
	decode(mustRun(t, home, "gc", "--json"), &gc)
	if gc.Blocks == 0 || gc.Bytes == 0 {
		t.Errorf("gc --json: %+v", gc)
	}
}

// Every command a user runs shows examples in its help.
func TestEveryCommandHasExamples(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Runnable() && !c.Hidden && c.Name() != "help" && c.Name() != "completion" && strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no examples", c.CommandPath())
		}
	}
	walk(newRoot())
}

// TestVerifyExitsDataLossOnACorruptStore: a byte flipped in a stored pack
// makes `shoal verify` fail with the data-loss exit code, naming what to do.
func TestVerifyExitsDataLossOnACorruptStore(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false")
	mustRun(t, home, "push", "oci:"+writeImage(t)+":v1")
	if out := mustRun(t, home, "verify"); !strings.Contains(out, "0 corrupt, 0 missing") {
		t.Fatalf("verify of a sound store: %s", out)
	}
	packs, _ := filepath.Glob(filepath.Join(home, "packs", "*"))
	var biggest string
	var size int64
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Size() > size {
			biggest, size = p, fi.Size()
		}
	}
	if biggest == "" {
		t.Fatalf("no pack under %s", home)
	}
	data, _ := os.ReadFile(biggest)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(biggest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, home, "verify"); r.code != errkind.ExitDataLoss || !strings.Contains(r.stderr, "--repair") {
		t.Fatalf("verify of a corrupt store: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}
}

// init makes the stores, as kubo's init makes its datastore, so that a
// home that cannot hold them fails at once.
func TestInitCreatesTheStores(t *testing.T) {
	home := t.TempDir()
	mustRun(t, home, "init", "--mdns=false", "--blocks", "pebble")
	for _, dir := range []string{"datastore", "blocks-pebble", "packs"} {
		if _, err := os.Stat(filepath.Join(home, dir)); err != nil {
			t.Fatalf("init did not make %s: %v", dir, err)
		}
	}
}
