package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/kubo"
	"github.com/shoal-ipfs/shoal/pkg/store/storetest"
)

// skopeoLayers is the layer digests skopeo sees in an image.
func skopeoLayers(t *testing.T, ref string) string {
	t.Helper()
	var inspected struct{ Layers []string }
	data, err := exec.Command(testenv.Tool(t, "skopeo"), "inspect", ref).Output()
	if err != nil || json.Unmarshal(data, &inspected) != nil {
		t.Fatalf("skopeo inspect %s: %v", ref, err)
	}
	return strings.Join(inspected.Layers, ",")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// TestKuboBackend: with --ipfs-api, shoal's commands and its registry run
// against a real kubo daemon and no embedded node. The image's root CID is
// the one the embedded node gives, in both layouts; kubo's own `ipfs add`
// gives its layer the CID shoal gives; kubo holds the blobs under named
// pins and shoal's record in MFS, so `ipfs repo gc` keeps them; the image
// comes back out as a layout skopeo reads, through shoal mount, and
// through the registry; an unknown CID fails at the --timeout; rm and gc
// free it.
func TestKuboBackend(t *testing.T) {
	kubo := startKubo(t)
	apiFile, err := os.ReadFile(filepath.Join(kubo.path, "api"))
	if err != nil {
		t.Fatal(err)
	}
	api := strings.TrimSpace(string(apiFile))
	bin := shoalBinary(t)
	onKubo := []string{"SHOAL_IPFS_API=" + api}
	sh := &shoalDaemon{bin: bin, home: t.TempDir(), env: onKubo}
	layout := debianImage(t)
	src := "oci:" + layout + ":bookworm"

	root := lastLine(sh.run(t, "push", src))
	t.Logf("pushed into kubo: %s", root)
	embedded := &shoalDaemon{bin: bin, home: t.TempDir()}
	if want := lastLine(embedded.run(t, "push", src)); root != want {
		t.Fatalf("through kubo the root is %s, on the embedded node %s", root, want)
	}

	// The other layout gives the embedded node's CIDs as well.
	v2025 := &shoalDaemon{bin: bin, home: t.TempDir(), env: onKubo}
	v2025.run(t, "init", "--layout", "unixfs-v1-2025")
	embedded2025 := &shoalDaemon{bin: bin, home: t.TempDir()}
	embedded2025.run(t, "init", "--layout", "unixfs-v1-2025")
	root2025 := lastLine(v2025.run(t, "push", "--index=false", src))
	if want := lastLine(embedded2025.run(t, "push", "--index=false", src)); root2025 != want || root2025 == root {
		t.Fatalf("unixfs-v1-2025: through kubo %s, embedded %s (kubo layout %s)", root2025, want, root)
	}
	sh.run(t, "rm", root2025) // v2025's record is in the same kubo: any client sees it

	// kubo's own add, as `nerdctl push ipfs://` runs it, gives the layer
	// the CID shoal gave it.
	var tree struct {
		Children []struct {
			Children []struct{ Role, Digest, CID string }
		}
	}
	if err := json.Unmarshal([]byte(sh.run(t, "inspect", "--json", root)), &tree); err != nil {
		t.Fatal(err)
	}
	var layerDigest, layerCID string
	for _, c := range tree.Children[0].Children {
		if c.Role == "layer" {
			layerDigest, layerCID = c.Digest, c.CID
		}
	}
	blobFile := filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(layerDigest, "sha256:"))
	if got := strings.TrimSpace(kubo.run(t, "add", "--only-hash", "--quieter", "--cid-version=1", blobFile)); got != layerCID {
		t.Fatalf("ipfs add --cid-version=1 of layer %s: %s, shoal: %s", layerDigest, got, layerCID)
	}

	// Every blob is pinned in kubo, by name, and the record is in MFS.
	var imgs []struct {
		CID   string
		Blobs []string
	}
	if err := json.Unmarshal([]byte(sh.run(t, "images", "--json")), &imgs); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].CID != root || len(imgs[0].Blobs) < 4 {
		t.Fatalf("shoal images through kubo: %+v", imgs)
	}
	pins := kubo.run(t, "pin", "ls", "--type=recursive", "--names")
	for _, b := range imgs[0].Blobs {
		if !strings.Contains(pins, b+" recursive shoal:"+root) {
			t.Errorf("blob %s is not pinned in kubo:\n%s", b, pins)
		}
	}
	if files := kubo.run(t, "files", "ls", "/shoal/images"); strings.TrimSpace(files) != root+".json" {
		t.Errorf("ipfs files ls /shoal/images: %q", files)
	}
	// kubo's GC keeps what shoal pinned: the pull below has no other source.
	kubo.run(t, "repo", "gc")

	out := t.TempDir()
	digest := lastLine(sh.run(t, "pull", root, "--to", "oci:"+out+":v1"))
	if layers := skopeoLayers(t, "oci:"+out+":v1"); !strings.Contains(layers, layerDigest) {
		t.Fatalf("skopeo inspect of the pulled layout: layers %s, want %s", layers, layerDigest)
	}
	if got := lastLine(embedded.run(t, "pull", root, "--to", "oci:"+t.TempDir()+":v1")); got != digest {
		t.Fatalf("pulled through kubo manifest %s, on the embedded node %s", digest, got)
	}

	t.Run("Discovery", func(t *testing.T) {
		// --ipfs-api auto reads $IPFS_PATH/api, as nerdctl does; so does
		// $SHOAL_IPFS_API=auto.
		auto := &shoalDaemon{bin: bin, home: sh.home, env: []string{"IPFS_PATH=" + kubo.path}}
		if id := auto.run(t, "--ipfs-api", "auto", "id", "--json"); !strings.Contains(id, kubo.ID) {
			t.Errorf("shoal --ipfs-api auto id: %s, want kubo's %s", id, kubo.ID)
		}
		auto.env = append(auto.env, "SHOAL_IPFS_API=auto")
		if !strings.Contains(auto.run(t, "images"), root) {
			t.Error("SHOAL_IPFS_API=auto does not list the image")
		}
		none := &shoalDaemon{bin: bin, home: sh.home, env: []string{"IPFS_PATH=" + t.TempDir()}}
		msg, err := none.command("--ipfs-api", "auto", "images").CombinedOutput()
		if err == nil || !strings.Contains(string(msg), "no kubo API file") {
			t.Errorf("without a running kubo: %v: %s", err, msg)
		}
	})

	t.Run("Mount", func(t *testing.T) {
		testenv.FUSE(t)
		mnt := t.TempDir()
		cmd := sh.command("mount", root, mnt)
		logs := testproc.Start(t, cmd, 60*time.Second, func(logs string) bool {
			return strings.Contains(logs, "mounted ")
		})
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
		release, err := os.ReadFile(filepath.Join(mnt, "etc", "os-release"))
		if err != nil || !strings.Contains(string(release), "bookworm") {
			t.Fatalf("read /etc/os-release through the mount: %v %q\n%s", err, release, logs.String())
		}
		if out, err := exec.Command(bin, "unmount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("unmount: %v\n%s", err, out)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("shoal mount: %v\n%s", err, logs.String())
		}
	})

	t.Run("UnknownCIDTimesOut", func(t *testing.T) {
		junk := filepath.Join(t.TempDir(), "junk")
		if err := os.WriteFile(junk, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644); err != nil {
			t.Fatal(err)
		}
		unknown := strings.TrimSpace(kubo.run(t, "add", "--only-hash", "--quieter", "--cid-version=1", junk))
		start := time.Now()
		msg, err := sh.command("pull", unknown, "--to", "oci:"+t.TempDir()+":x", "--timeout", "3s").CombinedOutput()
		took := time.Since(start)
		if err == nil || !strings.Contains(string(msg), unknown) || !strings.Contains(string(msg), "no peer sent the content in time") {
			t.Fatalf("pull of a CID nobody has: %v: %s", err, msg)
		}
		if took > 20*time.Second {
			t.Errorf("pull with --timeout 3s took %s", took)
		}
		t.Logf("%s in %s", strings.TrimSpace(string(msg)), took.Round(time.Millisecond))
	})

	t.Run("Registry", func(t *testing.T) {
		testenv.Tool(t, "skopeo")
		reg := "127.0.0.1:" + strconv.Itoa(freePort(t))
		d := sh.command("daemon", "--registry-listen", reg)
		logs := testproc.Start(t, d, 30*time.Second, func(logs string) bool {
			return strings.Contains(logs, "registry listening")
		})
		// The registry serves the image (its manifest without shoal's urls,
		// docs/registry.md), and skopeo copies it, checking every blob's
		// digest: the layers are those of the layout pulled above.
		pulled := t.TempDir()
		runTool(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+reg+"/ipfs/"+root+":latest", "oci:"+pulled+":v1")
		if got, want := skopeoLayers(t, "oci:"+pulled+":v1"), skopeoLayers(t, "oci:"+out+":v1"); got != want || got == "" {
			t.Fatalf("through the registry the layers are %s, pulled by shoal %s\n%s", got, want, logs.String())
		}
		// A push lands in kubo: the image is listed, and the registry
		// holds its blobs there.
		pushed := testimage.IndexLayout(t, 71, 1<<20, 50<<10)
		runTool(t, "skopeo", "copy", "--all", "--dest-tls-verify=false", "oci:"+pushed+":v1", "docker://"+reg+"/team/app:1")
		if listed := sh.run(t, "images"); !strings.Contains(listed, reg+"/team/app:1") {
			t.Errorf("shoal images does not list the image pushed to the registry:\n%s\n%s", listed, logs.String())
		}
		if holds := kubo.run(t, "files", "ls", "/shoal/holds"); !strings.Contains(holds, "team") {
			t.Errorf("no holds in kubo's MFS after a push to the registry: %q", holds)
		}
	})

	// rm unpins what shoal pinned, and gc frees the blocks.
	sh.run(t, "rm", root)
	pins = kubo.run(t, "pin", "ls", "--type=recursive")
	for _, b := range imgs[0].Blobs {
		if strings.Contains(pins, b) {
			t.Errorf("blob %s is still pinned after rm", b)
		}
	}
	if gc := sh.run(t, "gc"); !strings.HasPrefix(gc, "removed ") || strings.HasPrefix(gc, "removed 0 ") {
		t.Errorf("shoal gc after rm: %s", gc)
	}
	if listed := sh.run(t, "images"); strings.Contains(listed, root) {
		t.Errorf("images after rm: %s", listed)
	}
}

// A kubo node, through shoal's client of its RPC API, does what package
// store says a store does: a new kubo for each check, as each wants an
// empty store.
func TestKuboStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		k := startKubo(t)
		api, err := os.ReadFile(filepath.Join(k.path, "api"))
		if err != nil {
			t.Fatal(err)
		}
		addr, err := kubo.ParseAddress(strings.TrimSpace(string(api)))
		if err != nil {
			t.Fatal(err)
		}
		c, err := kubo.Dial(context.Background(), addr, blob.Kubo)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}
