package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testimage"
)

// campaign counts what a fault campaign tried and how each attempt ended.
type campaign struct {
	mu     sync.Mutex
	counts map[string]int
	errs   []string
}

func (c *campaign) note(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[what]++
}

// fail records a healthy request that did not finish, or wrong bytes.
func (c *campaign) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

func (c *campaign) report(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var lines []string
	for k, v := range c.counts {
		lines = append(lines, fmt.Sprintf("  %-48s %d", k, v))
	}
	slices.Sort(lines)
	t.Logf("fault campaign:\n%s", strings.Join(lines, "\n"))
	for _, e := range c.errs {
		t.Error(e)
	}
}

// largestLayer is the digest of an image's largest layer in a layout.
func largestLayer(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	big := m.Layers[0]
	for _, l := range m.Layers {
		if l.Size > big.Size {
			big = l
		}
	}
	return big.Digest
}

// largestPack is the largest pack file in a daemon's store.
func largestPack(t *testing.T, d *shoalDaemon) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.home, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var size int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Size() > size {
			best, size = filepath.Join(d.home, "packs", e.Name()), fi.Size()
		}
	}
	if best == "" {
		t.Fatal("no pack")
	}
	return best
}

// getBlob reads a blob from a registry whole and reports whether all of
// it came with a 200, and whether those bytes match the digest.
func getBlob(ctx context.Context, client *http.Client, url string, want v1.Hash) (complete, right bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || (resp.ContentLength >= 0 && n != resp.ContentLength) {
		return false, false, err
	}
	return true, hex.EncodeToString(h.Sum(nil)) == want.Hex, nil
}

// TestFaultCampaign runs the fault classes a serving node meets together,
// against real daemons: a group outsider forging shard records; a greedy
// client holding upload sessions open; GC looping while clients push to
// the registry and pulls come from a peer; clients that read a little of
// a blob and stall; a store whose pack a disk corrupted, read through the
// registry the whole time; the daemons are hosts of the testbed.
// (Crashes have tests of their own: crash_test.go.)
// It reports what it tried, and asserts that every healthy request
// finished, no response was complete with wrong bytes, and nothing pushed
// or pinned was lost.
func TestFaultCampaign(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var c campaign
	defer c.report(t)

	// The origin and the node are members of a group; an outsider with a
	// key of its own, connected to both, claims to be one.
	// Each daemon is a host of the testbed; the test's HTTP clients reach
	// the node's registry from inside the node's host.
	tb := testbed.ForTest(t, 3, testbed.Link{Rate: "1gbit"})
	key := startShoalDaemon(t).run(t, "group", "key")
	origin := startGroupMember(t, tb.Hosts[0], "campaign", key)
	node := startGroupMember(t, tb.Hosts[1], "campaign", key, "--peer", origin.Peer)
	outsider := startGroupMember(t, tb.Hosts[2], "campaign", node.run(t, "group", "key"), "--peer", origin.Peer, "--peer", node.Peer)
	client := hostClient(*node.host, "")
	// The image pulled again and again from the origin.
	pulled := lastLine(origin.run(t, "push", "oci:"+testimage.IndexLayout(t, 101, 24<<20, 3<<20)+":v1"))
	// The image whose pack is corrupted on the node; the origin holds it too,
	// so that the node can fetch what it drops.
	corruptLayout := testimage.IndexLayout(t, 102, 16<<20)
	corrupted := lastLine(node.run(t, "push", "oci:"+corruptLayout+":v1"))
	origin.run(t, "push", "oci:"+corruptLayout+":v1")
	pack := largestPack(t, node) // the corrupted image's layer, its only large blob
	node.run(t, "pull", pulled, "--peer", origin.Peer, "--to", "oci:"+t.TempDir()+":v1")
	corruptedImg, err := testimage.Image(102, testimage.Platforms[0], 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	corruptDigest := largestLayer(t, corruptedImg)
	os.Chmod(pack, 0o644)
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("sixteen bad byte"), 1<<20)
	f.Close()
	c.note("packs corrupted")

	// The group keeps the pulled image on both members; the outsider
	// shards it with one replica and shards content of its own, which no
	// member may take on.
	origin.run(t, "shard", pulled, "--replicas", "2")
	junk := lastLine(outsider.run(t, "push", "oci:"+testimage.IndexLayout(t, 103, 4<<20)+":v1"))
	outsider.command("shard", pulled, "--replicas", "1").Run()
	outsider.run(t, "shard", junk, "--replicas", "2")
	c.note("outsider shard records sent")

	var done atomic.Bool
	var wg sync.WaitGroup
	var workers sync.WaitGroup
	// GC, back to back, until the other workers finish.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() && ctx.Err() == nil {
			out, err := node.command("gc").CombinedOutput()
			if err != nil {
				c.fail("gc failed: %v\n%s", err, out)
				return
			}
			c.note("gc runs")
		}
	}()
	// Clients that read 64 KiB of a blob and stall until the end.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/v2/ipfs/%s/blobs/%s", node.Registry, pulled, largestLayerOf(t, 101))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := hostClient(*node.host, "").Do(req)
			if err != nil {
				c.fail("stalling client: %v", err)
				return
			}
			defer resp.Body.Close()
			io.CopyN(io.Discard, resp.Body, 64<<10)
			c.note("stalled readers")
			for !done.Load() && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	// A greedy client, from an address of its own, opens upload sessions
	// and never finishes them, until the registry says 429; the daemon
	// keeps no file open for them, and other clients' pushes go on.
	fdsBefore := openFiles(t, node)
	greedy := greedyUploads(ctx, t, hostClient(*node.host, "127.0.0.2"), node.Registry, 300)
	if greedy.refused == 0 {
		c.fail("a client opened %d upload sessions and was never refused", greedy.opened)
	}
	if grew := openFiles(t, node) - fdsBefore; grew > 50 {
		c.fail("%d unfinished uploads raised the daemon's open files by %d", greedy.opened, grew)
	}
	for range greedy.opened {
		c.note("greedy upload sessions opened")
	}
	for range greedy.refused {
		c.note("greedy upload sessions refused (429)")
	}
	// Pushes to the registry, each read back whole.
	pushed := make([]name.Reference, 10)
	workers.Add(1)
	go func() {
		defer workers.Done()
		for i := range pushed {
			img, err := testimage.Image(int64(200+i), testimage.Platforms[0], 2<<20, 300<<10)
			if err != nil {
				c.fail("make image: %v", err)
				return
			}
			ref, _ := name.NewTag(fmt.Sprintf("%s/campaign/app-%d:v1", node.Registry, i), name.Insecure)
			if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(client.Transport)); err != nil {
				c.fail("registry push %d: %v", i, err)
				continue
			}
			pushed[i] = ref
			c.note("registry pushes")
		}
	}()
	// Pulls from the origin, each image removed again so that GC has
	// something to take while the next pull stores the same blocks.
	workers.Add(1)
	go func() {
		defer workers.Done()
		for i := range 6 {
			dst := t.TempDir()
			out, err := node.command("pull", pulled, "--peer", origin.Peer, "--to", "oci:"+dst+":v1").CombinedOutput()
			if err != nil {
				c.fail("pull %d: %v\n%s", i, err, out)
				continue
			}
			testimage.Validate(t, dst)
			c.note("pulls from a peer")
			if out, err := node.command("rm", pulled).CombinedOutput(); err != nil {
				c.fail("rm: %v\n%s", err, out)
			}
		}
	}()
	// Reads of the corrupted blob through the registry: never complete
	// with wrong bytes.
	workers.Add(1)
	go func() {
		defer workers.Done()
		url := fmt.Sprintf("http://%s/v2/ipfs/%s/blobs/%s", node.Registry, corrupted, corruptDigest)
		for range 20 {
			complete, right, _ := getBlob(ctx, client, url, corruptDigest)
			switch {
			case complete && !right:
				c.fail("the registry served the corrupted blob complete with wrong bytes")
			case complete:
				c.note("corrupted blob served right (fetched again)")
			default:
				c.note("corrupted blob refused or cut short")
			}
		}
	}()
	workers.Wait()
	done.Store(true)
	wg.Wait()

	// Nothing pushed was lost: each image reads back whole after the GCs.
	if _, err := node.command("gc").CombinedOutput(); err != nil {
		c.fail("final gc: %v", err)
	}
	for i, ref := range pushed {
		if ref == nil {
			continue
		}
		img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(client.Transport))
		if err == nil {
			err = readLayers(img)
		}
		if err != nil {
			c.fail("registry image %d after the campaign: %v", i, err)
			continue
		}
		c.note("registry images whole at the end")
	}
	// The members kept their own record and took none of the outsider's.
	for _, m := range []*shoalDaemon{origin, node} {
		var st groupStatus
		out, err := m.command("status", pulled, "--json").Output()
		if err != nil || json.Unmarshal(out, &st) != nil || st.Replicas != 2 || len(st.Members) != 2 {
			c.fail("a member's record of the sharded image changed: %+v (%v)", st, err)
		}
		if out, err := m.command("status", junk).CombinedOutput(); err == nil {
			c.fail("a member took on the outsider's image:\n%s", out)
		} else {
			c.note("outsider records ignored by a member")
		}
	}
	out, err := node.command("verify", "--repair").CombinedOutput()
	if err != nil {
		c.fail("verify --repair at the end: %v\n%s", err, out)
	}
	if out := node.run(t, "verify"); !strings.Contains(out, "0 corrupt, 0 missing") {
		c.fail("verify at the end: %s", out)
	}
}

// openFiles counts the daemon's open file descriptors.
func openFiles(t *testing.T, d *shoalDaemon) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.proc.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

type greedyResult struct{ opened, refused int }

// greedyUploads starts up to n upload sessions at registry with client,
// and finishes none.
func greedyUploads(ctx context.Context, t *testing.T, client *http.Client, registry string, n int) greedyResult {
	t.Helper()
	var res greedyResult
	for range n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+registry+"/v2/greedy/blob/blobs/uploads/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("greedy client: %v", err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			res.opened++
		case http.StatusTooManyRequests:
			res.refused++
		default:
			t.Fatalf("greedy client: upload start answered %s", resp.Status)
		}
	}
	return res
}

// startGroupMember starts a daemon on host in group name with the group
// key key.
func startGroupMember(t *testing.T, host testbed.Host, group, key string, args ...string) *shoalDaemon {
	t.Helper()
	d := newShoalHome(t, "/ip4/"+host.Addr+"/tcp/4051", append([]string{"--group", group}, args...))
	if err := os.WriteFile(filepath.Join(d.home, "group.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	d.host = &host
	d.start(t)
	return d
}

// hostClient is an HTTP client whose connections are made inside host's
// network namespace, from the local address from if given.
func hostClient(host testbed.Host, from string) *http.Client {
	dialer := &net.Dialer{}
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := host.Do(func() error {
				var err error
				conn, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
}

// largestLayerOf is the largest layer's digest of testimage's image of
// seed with IndexLayout's first platform and layer sizes 24 MiB and 3 MiB.
func largestLayerOf(t *testing.T, seed int64) v1.Hash {
	t.Helper()
	img, err := testimage.Image(seed, testimage.Platforms[0], 24<<20, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	return largestLayer(t, img)
}

// readLayers reads every layer of img whole; the client checks each
// against its digest.
func readLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
