package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerdFlavours are the containerds the snapshotter is tested with:
// Debian's 1.6 and 2.x built from the module proxy, each with the config
// version `shoal containerd config` writes for it.
var containerdFlavours = []struct {
	name    string
	dir     func(*testing.T) string
	version int
}{
	{"debian-1.6", debianContainerdDir, 2},
	{"v2", containerd2Dir, 3},
}

// debianContainerdDir is where Debian's containerd 1.6 is installed.
func debianContainerdDir(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testenv.Tool(t, "containerd"))
}

// startContainerdForShoal runs containerd with the config fragment that
// `shoal containerd config [flags]` prints for daemon d, CRI on, and the
// hosts directory hosts.
func startContainerdForShoal(t *testing.T, binDir string, version int, d *shoalDaemon, hosts string, flags ...string) *Containerd {
	t.Helper()
	fragment := d.run(t, append([]string{"containerd", "config", "--version", strconv.Itoa(version)}, flags...)...)
	if !strings.Contains(fragment, d.Containerd) {
		t.Fatalf("the config names another socket than the daemon's %s:\n%s", d.Containerd, fragment)
	}
	fragment = strings.Replace(fragment, fmt.Sprintf("version = %d\n", version), "", 1)
	fragment = strings.ReplaceAll(fragment, "/etc/containerd/certs.d", hosts)
	return startContainerdWith(t, binDir, func(root, state, sock string) string {
		return fmt.Sprintf("version = %d\nroot = %q\nstate = %q\n", version, root, state) + fragment +
			fmt.Sprintf("\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", sock, sock+".ttrpc")
	})
}

// fetchedBytes is what daemon d has received from peers, from its metrics.
func fetchedBytes(t *testing.T, d *shoalDaemon) int64 {
	t.Helper()
	resp, err := http.Get("http://" + d.Registry + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var total int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "shoal_fetched_bytes_total{"); ok {
			v, _ := strconv.ParseFloat(rest[strings.Index(rest, "} ")+2:], 64)
			total += int64(v)
		}
	}
	return total
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestContainerdRunsLazilyOnTheSnapshotter: node A holds the Debian
// image; node B's daemon is containerd's snapshotter. `shoal pull --to
// containerd:REF` on B makes the image, `ctr run --snapshotter shoal`
// starts it with a fraction of the image fetched, and it runs again after
// both B and containerd restart. Then CRI pulls another image by CID
// through B's registry, lazily too, and removing the images lets containerd's GC
// take every snapshot back.
func TestContainerdRunsLazilyOnTheSnapshotter(t *testing.T) {
	for _, flavour := range containerdFlavours {
		t.Run(flavour.name, func(t *testing.T) {
			testenv.FUSE(t)
			testenv.Tool(t, "runc")
			layout := debianImage(t)
			imageSize := dirSize(t, filepath.Join(layout, "blobs"))
			a := startShoalDaemon(t)
			out := strings.TrimSpace(a.run(t, "push", "oci:"+layout+":bookworm"))
			root := out[strings.LastIndex(out, "\n")+1:]
			out = strings.TrimSpace(a.run(t, "push", "oci:"+helloImage(t)+":v1"))
			helloRoot := out[strings.LastIndex(out, "\n")+1:]
			out = strings.TrimSpace(a.run(t, "push", "oci:"+testimage.IndexLayout(t, 7, 300_000)+":v1"))
			randomRoot := out[strings.LastIndex(out, "\n")+1:]
			b := startShoalDaemon(t, "--peer", a.Peer)
			if b.Containerd == "" {
				t.Fatalf("daemon B serves no containerd plugins:\n%s", b.logs.String())
			}
			hosts := t.TempDir()
			os.MkdirAll(filepath.Join(hosts, b.Registry), 0o755)
			os.WriteFile(filepath.Join(hosts, b.Registry, "hosts.toml"), []byte(hostsTOML(b.Registry)), 0o644)
			ctrd := startContainerdForShoal(t, flavour.dir(t), flavour.version, b, hosts)

			// An image nobody has: a clear error in bounded time.
			missing := b.command("pull", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "--to", "containerd:shoal.test/missing:1",
				"--containerd-address", ctrd.Socket, "--containerd-namespace", "shoal-e2e", "--timeout", "2s")
			if out, err := missing.CombinedOutput(); err == nil || !strings.Contains(string(out), "no peer sent the content in time") {
				t.Errorf("pull of an unreachable CID into containerd: %v\n%s", err, out)
			}

			ref := "shoal.test/debian:lazy"
			name := strings.TrimSpace(b.run(t, "pull", root, "--to", "containerd:"+ref,
				"--containerd-address", ctrd.Socket, "--containerd-namespace", "shoal-e2e"))
			if name != "docker.io/"+ref && name != ref {
				t.Errorf("pull printed %q", name)
			}
			run := func(id string) {
				t.Helper()
				got := ctrd.Ctr(t, "run", "--rm", "--snapshotter", "shoal", name, id, "cat", "/etc/os-release")
				if !strings.Contains(got, "Debian GNU/Linux") {
					t.Fatalf("container printed %q\nshoal:\n%s", got, b.logs.String())
				}
			}
			run("lazy-1")
			fetched := fetchedBytes(t, b)
			t.Logf("container ran with %d of the image's %d bytes fetched (%.1f%%)", fetched, imageSize, 100*float64(fetched)/float64(imageSize))
			if fetched > imageSize/2 {
				t.Errorf("B fetched %d bytes of a %d-byte image: not lazy", fetched, imageSize)
			}

			b.restart(t)
			ctrd.restart(t)
			run("lazy-2")

			// With shoal down, containerd says so rather than hang.
			testproc.Stop(b.proc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			down, err := exec.CommandContext(ctx, ctrd.ctr, "--address", ctrd.Socket, "--namespace", "shoal-e2e",
				"run", "--rm", "--snapshotter", "shoal", name, "lazy-down", "true").CombinedOutput()
			hung := ctx.Err()
			cancel()
			if err == nil || hung != nil {
				t.Errorf("ctr run with shoal down: %v (%v)\n%s", err, hung, down)
			}
			t.Logf("with shoal down, ctr run says: %s", strings.TrimSpace(string(down)))
			b.start(t)
			snapshotterBack(t, ctrd)

			// CRI, as the kubelet pulls: by CID through B's registry.
			criRef := b.Registry + "/ipfs/" + helloRoot
			imageID, criImages := criPull(t, ctrd, criRef)
			if lazySnapshots(t, ctrd.ctrK8s) == 0 {
				t.Errorf("CRI's pull made no lazy snapshot:\n%s", b.logs.String())
			}

			// containerd 2.x's transfer service passes the layers' labels
			// to the snapshotter too (1.6's ctr pull does not).
			if flavour.version == 3 {
				before := lazySnapshots(t, ctrd.Ctr)
				ctrd.Ctr(t, "images", "pull", "--snapshotter", "shoal", "--hosts-dir", hosts, b.Registry+"/ipfs/"+randomRoot+":latest")
				if lazySnapshots(t, ctrd.Ctr) == before {
					t.Errorf("ctr pull through the transfer service made no lazy snapshot:\n%s", b.logs.String())
				}
				ctrd.Ctr(t, "images", "rm", "--sync", b.Registry+"/ipfs/"+randomRoot+":latest")
			}

			// Removing the images lets containerd's GC remove the snapshots,
			// and the snapshotter its mounts.
			ctrd.Ctr(t, "images", "rm", "--sync", name)
			ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := criImages.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: imageID}}); err != nil {
				t.Fatalf("CRI RemoveImage: %v", err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				rows := append(listed(ctrd.Ctr(t, "snapshots", "--snapshotter", "shoal", "ls")),
					listed(ctrd.ctrK8s(t, "snapshots", "--snapshotter", "shoal", "ls"))...)
				left := len(rows)
				mounts, _ := os.ReadFile("/proc/self/mountinfo")
				if left == 0 && !strings.Contains(string(mounts), b.home) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("snapshots left after the images went: %q; mounts under %s: %v", rows, b.home, strings.Contains(string(mounts), b.home))
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}

// lazySnapshots counts the lazily mounted layers ctr lists (through
// ctr, for one namespace or another).
func lazySnapshots(t *testing.T, ctr func(*testing.T, ...string) string) int {
	t.Helper()
	lazy := 0
	for _, f := range listed(ctr(t, "snapshots", "--snapshotter", "shoal", "ls")) {
		if f[len(f)-1] == "Committed" && strings.Contains(ctr(t, "snapshots", "--snapshotter", "shoal", "info", f[0]), "io.shoal.snapshot.layer") {
			lazy++
		}
	}
	return lazy
}

// listed are the fields of the rows of a table ctr prints, after its
// header (ctr 2.x may warn first).
func listed(table string) [][]string {
	var rows [][]string
	header := false
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "KEY":
			header = true
		case header && len(f) > 0:
			rows = append(rows, f)
		}
	}
	return rows
}

// snapshotterBack waits until containerd reaches the snapshotter again
// after it restarted: containerd redials its proxy plugins with a backoff
// of its own, and a request in between fails as if shoal were still down
// (a kubelet retries such a pull).
func snapshotterBack(t *testing.T, ctrd *Containerd) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command(ctrd.ctr, "--address", ctrd.Socket, "--namespace", "k8s.io",
			"snapshots", "--snapshotter", "shoal", "ls").CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd does not reach the restarted snapshotter: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ctrK8s runs ctr in CRI's namespace.
func (c *Containerd) ctrK8s(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(c.ctr, append([]string{"--address", c.Socket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ctr -n k8s.io %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// criPull pulls ref through containerd's CRI plugin, as the kubelet does,
// and returns the image's ID and CRI's image service.
func criPull(t *testing.T, ctrd *Containerd, ref string) (string, runtimeapi.ImageServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+ctrd.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	images := runtimeapi.NewImageServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		// The CRI plugin may still be starting when the socket appears; and
		// right after the snapshotter restarted, containerd's connection to
		// it may still be redialling (once a snapshot list got through, a
		// pull 0.3 s later did not): a kubelet retries such a pull.
		pulled, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err == nil {
			return pulled.ImageRef, images
		}
		retry := strings.Contains(err.Error(), "Unimplemented") || strings.Contains(err.Error(), "connection error")
		if ctx.Err() != nil || !retry {
			t.Fatalf("CRI PullImage %s: %v\n%s", ref, err, ctrd.logs.String())
		}
		t.Logf("CRI PullImage %s: %v; again", ref, err)
		time.Sleep(200 * time.Millisecond)
	}
}
