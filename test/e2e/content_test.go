package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// startDistribution runs Debian's docker-registry (distribution) on a free
// loopback port and returns its host:port.
func startDistribution(t *testing.T) string {
	t.Helper()
	return startDistributionWith(t, "").host
}

// distribution is a docker-registry a test runs; its access log, in its
// logs, tells every request it answered.
type distribution struct {
	host string
	proc *exec.Cmd
	logs *testproc.Logs
}

// startDistributionWith runs docker-registry with its own storage on a
// free loopback port; with htpasswd (a file of bcrypt entries), every
// request needs credentials.
func startDistributionWith(t *testing.T, htpasswd string) *distribution {
	t.Helper()
	return startDistributionAt(t, nil, fmt.Sprintf("127.0.0.1:%d", freePort(t)), htpasswd)
}

// startDistributionOn runs docker-registry on a testbed host, port 5000.
func startDistributionOn(t *testing.T, h testbed.Host) *distribution {
	t.Helper()
	return startDistributionAt(t, &h, h.Addr+":5000", "")
}

func startDistributionAt(t *testing.T, h *testbed.Host, host, htpasswd string) *distribution {
	t.Helper()
	testenv.Tool(t, "docker-registry")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), host)
	if htpasswd != "" {
		conf += fmt.Sprintf("auth:\n  htpasswd:\n    realm: private\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", cfg)
	client := http.DefaultClient
	if h != nil {
		cmd = h.Command(context.Background(), "docker-registry", "serve", cfg)
		client = hostClient(*h, "")
	}
	logs := testproc.Start(t, cmd, 30*time.Second, func(string) bool {
		resp, err := client.Get("http://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized
	})
	return &distribution{host: host, proc: cmd, logs: logs}
}

// layoutLayer is the first layer of the image tagged tag in the OCI layout
// at dir, and its bytes.
func layoutLayer(t *testing.T, dir string) (ocispec.Descriptor, []byte) {
	t.Helper()
	var idx ocispec.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	var m ocispec.Manifest
	readJSON(t, filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	l := m.Layers[0]
	data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return l, data
}

// TestContainerdStoresContentInIPFS: with shoal's content store in place
// of containerd's own (as `shoal containerd config --content` says),
// containerd pulls an image from an ordinary registry and runs it, and
// the layer is in IPFS under the CID its bytes have, for another node to
// fetch from shoal. It runs again after shoal and containerd restart, and
// when the image goes, containerd's GC unpins its blobs in shoal.
func TestContainerdStoresContentInIPFS(t *testing.T) {
	for _, flavour := range containerdFlavours {
		t.Run(flavour.name, func(t *testing.T) {
			testenv.Root(t)
			testenv.Tool(t, "runc")
			testenv.Tool(t, "skopeo")
			reg := startDistribution(t)
			hello := helloImage(t)
			if out, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+hello+":v1", "docker://"+reg+"/hello:v1").CombinedOutput(); err != nil {
				t.Fatalf("skopeo: %v\n%s", err, out)
			}
			b := startShoalDaemon(t)
			ctrd := startContainerdForShoal(t, flavour.dir(t), flavour.version, b, t.TempDir(), "--content")
			ref := reg + "/hello:v1"
			ctrd.Ctr(t, "images", "pull", "--plain-http", ref)
			run := func(id string) {
				t.Helper()
				if got := ctrd.Ctr(t, "run", "--rm", ref, id); !strings.Contains(got, helloGreeting) {
					t.Fatalf("container printed %q", got)
				}
			}
			run("content-1")

			// The layer's CID is what its bytes give anywhere in shoal.
			layer, data := layoutLayer(t, hello)
			scratch := filepath.Join(t.TempDir(), "scratch")
			if _, err := config.Init(scratch, config.DefaultConfig()); err != nil {
				t.Fatal(err)
			}
			offline, err := node.Open(context.Background(), scratch, node.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := offline.Add(context.Background(), strings.NewReader(string(data)))
			offline.Close()
			if err != nil {
				t.Fatal(err)
			}
			fetch := func() (digest.Digest, error) {
				c := shoalNode(t, b.Peer)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				rc, err := c.Cat(ctx, want)
				if err != nil {
					return "", err
				}
				defer rc.Close()
				got, err := io.ReadAll(rc)
				return digest.FromBytes(got), err
			}
			if d, err := fetch(); err != nil || d != layer.Digest {
				t.Fatalf("a peer fetched %s by %s: %s %v", layer.Digest, want, d, err)
			}

			b.restart(t)
			ctrd.restart(t)
			run("content-2")

			ctrd.Ctr(t, "images", "rm", "--sync", ref)
			if out := ctrd.Ctr(t, "content", "ls"); strings.Contains(out, layer.Digest.String()) {
				t.Errorf("containerd keeps the layer after its GC:\n%s", out)
			}
			if out := b.run(t, "gc"); strings.HasPrefix(out, "removed 0 blocks") {
				t.Errorf("shoal gc after containerd's: %s", out)
			}
		})
	}
}
