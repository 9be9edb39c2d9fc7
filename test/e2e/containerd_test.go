package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const helloGreeting = "hello from an image shoal served"

// helloImage writes an OCI layout (tag v1) of a one-layer image whose
// entrypoint is a static program printing helloGreeting: small, and
// runnable by runc.
func helloImage(t *testing.T) string {
	t.Helper()
	return greetingImage(t, helloGreeting)
}

// greetingImage is helloImage's kind of image printing greeting instead,
// whose layer is another.
func greetingImage(t *testing.T, greeting string) string {
	t.Helper()
	src := t.TempDir()
	prog := fmt.Sprintf("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(%q) }\n", greeting)
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(src, "hello")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "main.go")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	return programImage(t, bin)
}

// programImage writes an OCI layout (tag v1) of a one-layer image holding
// the static program at bin as its entrypoint, /NAME.
func programImage(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(bin)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: []string{"/" + name}})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
	dir := t.TempDir()
	if err := testimage.WriteLayout(dir, "v1", img); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestContainerdRunsAnImageByCID: node A holds an image; containerd pulls
// it as B.Registry/ipfs/CID from node B, whose registry fetches the blocks
// from A, through a hosts.toml as a Kubernetes node would have, and runs
// it with runc. Debian's containerd 1.6 pulls client-side; containerd 2.x
// through its transfer service.
func TestContainerdRunsAnImageByCID(t *testing.T) {
	for _, flavour := range containerdFlavours {
		t.Run(flavour.name, func(t *testing.T) {
			ctrd := startContainerdFrom(t, flavour.dir(t))
			testenv.Tool(t, "runc")
			b, root, hosts := helloServedByAPeer(t)
			ref := b.Registry + "/ipfs/" + root + ":latest"
			ctrd.Ctr(t, "images", "pull", "--hosts-dir", hosts, ref)
			got := ctrd.Ctr(t, "run", "--rm", ref, "shoal-hello-"+flavour.name)
			if !strings.Contains(got, helloGreeting) {
				t.Fatalf("container printed %q, want %q", got, helloGreeting)
			}
		})
	}
}

// helloServedByAPeer pushes helloImage into daemon A and starts daemon B
// with A as its peer; it returns B, the image's root CID, and a hosts
// directory that points containerd at B's registry.
func helloServedByAPeer(t *testing.T) (b *shoalDaemon, root, hosts string) {
	t.Helper()
	a := startShoalDaemon(t)
	out := strings.TrimSpace(a.run(t, "push", "oci:"+helloImage(t)+":v1"))
	root = out[strings.LastIndex(out, "\n")+1:]
	b = startShoalDaemon(t, "--peer", a.Peer)
	hosts = t.TempDir()
	hostDir := filepath.Join(hosts, b.Registry)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hostsTOML(b.Registry)), 0o644); err != nil {
		t.Fatal(err)
	}
	return b, root, hosts
}

// hostsTOML is the hosts.toml a node needs for a shoal registry at addr,
// as docs/operations.md gives it.
func hostsTOML(addr string) string {
	return fmt.Sprintf(`server = "http://%s"

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, addr, addr)
}

// TestCRIPullsAnImageByCID: containerd's CRI plugin, configured as
// docs/operations.md tells a Kubernetes node (config_path naming the
// hosts directory), pulls B.Registry/ipfs/CID as the kubelet would, with
// the blocks on node A.
func TestCRIPullsAnImageByCID(t *testing.T) {
	// As docs/operations.md tells each version.
	criConfig := map[int]string{
		2: `version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = %q
`,
		3: `version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = %q
`}
	for _, flavour := range containerdFlavours {
		t.Run(flavour.name, func(t *testing.T) {
			b, root, hosts := helloServedByAPeer(t)
			ctrd := startContainerdWith(t, flavour.dir(t), func(rootDir, state, sock string) string {
				return fmt.Sprintf(criConfig[flavour.version], rootDir, state, sock, hosts)
			})
			ref := b.Registry + "/ipfs/" + root
			imageRef, images := criPull(t, ctrd, ref)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			status, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
			if err != nil || status.Image == nil || !slices.Contains(status.Image.RepoTags, ref+":latest") {
				t.Fatalf("CRI image status of %s: %+v %v", imageRef, status, err)
			}
		})
	}
}
