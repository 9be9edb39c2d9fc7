package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	stargzipfs "github.com/containerd/stargz-snapshotter/ipfs"
	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

const interopRef = "shoal.test/interop:v1"

// importTestImage writes the two-platform test image as an OCI archive and
// imports it into containerd, as `nerdctl load` would.
func importTestImage(t *testing.T, ctx context.Context, client *containerd.Client) string {
	t.Helper()
	dir := testimage.IndexLayout(t, 42, 3<<20, 700<<10, 5<<10)
	archive := filepath.Join(t.TempDir(), "image.tar")
	if out, err := exec.Command("tar", "-C", dir, "-cf", archive, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := client.Import(ctx, f, containerd.WithIndexName(interopRef), containerd.WithAllPlatforms(true)); err != nil {
		t.Fatalf("containerd import: %v", err)
	}
	return dir
}

// layerCIDs maps each config and layer digest of an image to its CID.
func layerCIDs(t *testing.T, tree *image.Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(n *image.Node)
	walk = func(n *image.Node) {
		if n.Role == "layer" || n.Role == "config" {
			out[n.Digest] = n.CID
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(tree)
	return out
}

// TestNerdctlPushShoalPull: an image written into kubo by stargz-snapshotter's
// ipfs package (what `nerdctl push ipfs://` runs) is pulled by shoal with
// kubo as its only peer, and its blobs have the CIDs shoal itself gives.
func TestNerdctlPushShoalPull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubo := startKubo(t)
	client := startContainerd(t)
	ctx = namespacesCtx(ctx)
	layoutDir := importTestImage(t, ctx, client)

	rootCID, err := stargzipfs.PushWithIPFSPath(ctx, client, interopRef, nil, platforms.All, &kubo.path)
	if err != nil {
		t.Fatalf("nerdctl-format push into kubo: %v", err)
	}
	t.Logf("nerdctl-format image in kubo: %s", rootCID)

	n := shoalNode(t, tcpAddr(t, kubo.Addrs)+"/p2p/"+kubo.ID)
	out := t.TempDir()
	dst, err := transport.OpenDestination("oci:" + out + ":pulled")
	if err != nil {
		t.Fatal(err)
	}
	root := cid.MustParse(rootCID)
	if _, err := image.Pull(ctx, n, root, dst, image.PullOptions{Timeout: 30 * time.Second}); err != nil {
		t.Fatalf("shoal pull of a nerdctl-format image from kubo: %v", err)
	}
	testimage.Validate(t, out)
	if out, err := exec.Command("skopeo", "inspect", "--raw", "oci:"+out+":pulled").CombinedOutput(); err != nil {
		t.Fatalf("skopeo cannot read the pulled layout: %v\n%s", err, out)
	}

	theirs, err := image.Inspect(ctx, n, root, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// shoal's own conversion of the same image gives every blob the same CID.
	res := testimage.Push(ctx, t, n, layoutDir, image.PushOptions{})
	ours, err := image.Inspect(ctx, n, res.Root, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	theirCIDs, ourCIDs := layerCIDs(t, theirs), layerCIDs(t, ours)
	if len(theirCIDs) == 0 || len(theirCIDs) != len(ourCIDs) {
		t.Fatalf("blobs: nerdctl %d, shoal %d", len(theirCIDs), len(ourCIDs))
	}
	for d, c := range theirCIDs {
		if ourCIDs[d] != c {
			t.Errorf("blob %s: nerdctl-format CID %s, shoal CID %s", d, c, ourCIDs[d])
		}
	}
}

// TestShoalPushNerdctlPull: an image pushed by shoal is read back by
// stargz-snapshotter's resolver (what `nerdctl pull ipfs://` uses) through
// kubo, after kubo fetched it from shoal; containerd verifies every digest.
func TestShoalPushNerdctlPull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubo := startKubo(t)
	client := startContainerd(t)
	ctx = namespacesCtx(ctx)

	n := shoalNode(t)
	res := testimage.Push(ctx, t, n, testimage.IndexLayout(t, 43, 2<<20, 300<<10), image.PushOptions{})
	id, err := n.ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kubo.run(t, "swarm", "connect", id.Addresses[0])

	resolver, err := stargzipfs.NewResolver(stargzipfs.ResolverOptions{Scheme: "ipfs", IPFSPath: kubo.path})
	if err != nil {
		t.Fatal(err)
	}
	// containerd fetches one platform a pull; pull both.
	var img containerd.Image
	for _, p := range []string{"linux/amd64", "linux/arm64/v8"} {
		img, err = client.Pull(ctx, res.Root.String(), containerd.WithResolver(resolver), containerd.WithPlatform(p))
		if err != nil {
			t.Fatalf("containerd pull (%s) through the nerdctl resolver via kubo: %v", p, err)
		}
	}
	if img.Target().Digest != res.Descriptor.Digest {
		t.Fatalf("containerd has %s, shoal pushed %s", img.Target().Digest, res.Descriptor.Digest)
	}
	// Every blob of every platform arrived and verified.
	children, err := images.Children(ctx, client.ContentStore(), img.Target())
	if err != nil {
		t.Fatal(err)
	}
	var walk func(ds []ocispec.Descriptor)
	count := 0
	walk = func(ds []ocispec.Descriptor) {
		for _, d := range ds {
			if _, err := client.ContentStore().Info(ctx, d.Digest); err != nil {
				t.Fatalf("containerd lacks %s: %v", d.Digest, err)
			}
			count++
			cs, err := images.Children(ctx, client.ContentStore(), d)
			if err != nil {
				t.Fatal(err)
			}
			walk(cs)
		}
	}
	walk(children)
	if count != 2+2*3 { // two manifests, each with a config and two layers
		t.Fatalf("containerd holds %d blobs of the image, want 8", count)
	}
}
