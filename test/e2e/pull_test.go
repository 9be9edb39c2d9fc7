package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

func pushTestImage(t *testing.T, ctx context.Context, n *node.Node, seed int64, platforms ...ocispec.Platform) image.Result {
	t.Helper()
	return testimage.Push(ctx, t, n, testimage.IndexLayout(t, seed, 3<<20, 200<<10), image.PushOptions{Platforms: platforms})
}

func pull(ctx context.Context, n *node.Node, root cid.Cid, dest string, timeout time.Duration) error {
	dst, err := transport.OpenDestination(dest)
	if err != nil {
		return err
	}
	defer dst.Close()
	_, err = image.Pull(ctx, n, root, dst, image.PullOptions{Timeout: timeout})
	return err
}

// shoalPair starts node a, and node b connected to it.
func shoalPair(t *testing.T) (a, b *node.Node) {
	t.Helper()
	a = shoalNode(t)
	id, err := a.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a, shoalNode(t, id.Addresses[0])
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	testenv.Tool(t, name)
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestPulledImagesAreReadByUmociAndSkopeo: both destinations of a pull are
// valid for the tools that read OCI layouts, and what they copy of them is
// whole.
func TestPulledImagesAreReadByUmociAndSkopeo(t *testing.T) {
	testenv.Root(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := shoalPair(t)
	res := pushTestImage(t, ctx, a, 11)
	// umoci unpacks single-platform images only.
	amd64 := pushTestImage(t, ctx, a, 11, ocispec.Platform{OS: "linux", Architecture: "amd64"})

	out := t.TempDir()
	if err := pull(ctx, b, res.Root, "oci:"+out+"/layout:pulled", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := pull(ctx, b, amd64.Root, "oci:"+out+"/layout:amd64", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	runTool(t, "umoci", "unpack", "--image", out+"/layout:amd64", out+"/bundle")
	if _, err := os.Stat(filepath.Join(out, "bundle", "rootfs")); err != nil {
		t.Fatal(err)
	}
	runTool(t, "skopeo", "copy", "--all", "oci:"+out+"/layout:pulled", "oci:"+out+"/copy:again")
	// A copy of a pulled layout is whole: skopeo leaves behind a layer
	// whose descriptor has urls, so none may have them.
	runTool(t, "skopeo", "copy", "oci:"+out+"/layout:amd64", "oci:"+out+"/copy:amd64")
	runTool(t, "umoci", "unpack", "--image", out+"/copy:amd64", out+"/bundle-of-copy")
	if _, err := os.Stat(filepath.Join(out, "bundle-of-copy", "rootfs")); err != nil {
		t.Fatal(err)
	}

	archive := filepath.Join(out, "image.tar")
	if err := pull(ctx, b, res.Root, "oci-archive:"+archive+":pulled", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	runTool(t, "skopeo", "inspect", "--raw", "oci-archive:"+archive+":pulled")
}

// TestPullOfADirectoryCID: a CID that is a UnixFS directory is refused with
// a clear error, and nothing is written or listed.
func TestPullOfADirectoryCID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kubo := startKubo(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirCID := strings.TrimSpace(kubo.run(t, "add", "-r", "-Q", "--cid-version=1", dir))
	n := shoalNode(t, tcpAddr(t, kubo.Addrs)+"/p2p/"+kubo.ID)
	out := t.TempDir()
	err := pull(ctx, n, cid.MustParse(dirCID), "oci:"+out, 20*time.Second)
	if !errors.Is(err, image.ErrNotImage) {
		t.Fatalf("pull of a directory: %v, want ErrNotImage", err)
	}
	if _, err := os.Stat(filepath.Join(out, "index.json")); err == nil {
		t.Fatal("pull of a directory wrote index.json")
	}
	if imgs, _ := n.Images(ctx); len(imgs) != 0 {
		t.Fatalf("pull of a directory listed %v", imgs)
	}
}

// TestPullOntoAFullDisk: the destination fills up; the error says so and
// nothing that looks like an image is left.
func TestPullOntoAFullDisk(t *testing.T) {
	testenv.Root(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := shoalPair(t)
	res := pushTestImage(t, ctx, a, 12)

	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		testenv.Need(t, "a tmpfs mount", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	err := pull(ctx, b, res.Root, "oci:"+mnt+"/layout", 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("pull onto a full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "layout", "index.json")); err == nil {
		t.Fatal("a pull onto a full disk wrote index.json")
	}
	partial, _ := filepath.Glob(filepath.Join(mnt, "layout", "blobs", "sha256", ".partial-*"))
	if len(partial) != 0 {
		t.Fatalf("partial blobs left: %v", partial)
	}
	if imgs, _ := b.Images(ctx); len(imgs) != 0 {
		t.Fatalf("a failed pull listed %v", imgs)
	}
}
