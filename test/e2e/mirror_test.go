package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
	"golang.org/x/crypto/bcrypt"
)

// blobGetRE matches a blob sent whole or in part in distribution's
// access log.
var blobGetRE = regexp.MustCompile(`"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 20[06] `)

// blobGets counts, per digest, the blobs the registry sent.
func (d *distribution) blobGets() map[string]int {
	out := map[string]int{}
	for _, m := range blobGetRE.FindAllStringSubmatch(d.logs.String(), -1) {
		out[m[1]]++
	}
	return out
}

func sumGets(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// mirrorHosts is a hosts directory, written by `shoal containerd config
// --mirror`, that sends containerd's pulls of each plain-HTTP registry to
// d's mirror first, the registry itself after.
func mirrorHosts(t *testing.T, d *shoalDaemon, upstreams ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"containerd", "config", "--hosts-dir", dir, "--write"}
	for _, up := range upstreams {
		args = append(args, "--mirror", up+"=http://"+up)
	}
	d.run(t, args...)
	return dir
}

// TestMirrorThroughThreeNodes: three shoal daemons mirror a distribution
// registry for containerd: a cold pull on one node (containerd 2.x) takes
// each blob from the registry once; the other two pull the same image with
// no blob from the registry (one through 2.x's CRI, one by digest with
// Debian's containerd 1.6); three nodes pulling
// another image at once cold take each of its blobs from the registry
// once; with the registry stopped, tags still resolve and images pull,
// on a node that never saw them too.
func TestMirrorThroughThreeNodes(t *testing.T) {
	testenv.Root(t)
	up := startDistributionWith(t, "")
	runTool(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+helloImage(t)+":v1", "docker://"+up.host+"/library/hello:v1")
	runTool(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+debianImage(t)+":bookworm", "docker://"+up.host+"/library/debian:bookworm")
	base := sumGets(up.blobGets())
	mirror := "--mirror=" + up.host + "=http://" + up.host
	a := startShoalDaemon(t, mirror, "--mirror-tag-ttl=1s")
	b := startShoalDaemon(t, mirror, "--mirror-tag-ttl=1s", "--peer", a.Peer)
	c := startShoalDaemon(t, mirror, "--mirror-tag-ttl=1s", "--peer", a.Peer, "--peer", b.Peer)
	ctrA := startContainerdFrom(t, containerd2Dir(t))
	ctrC := startContainerdFrom(t, debianContainerdDir(t)) // 1.6

	hello := up.host + "/library/hello:v1"
	ctrA.Ctr(t, "images", "pull", "--hosts-dir", mirrorHosts(t, a, up.host), hello)
	first := up.blobGets()
	if n := sumGets(first) - base; n != 2 {
		t.Fatalf("cold pull of a two-blob image through node A: the registry sent %d blobs, want 2\n%v", n, first)
	}
	// B through CRI, as a kubelet pulls; C by digest with ctr.
	ctrdB := startContainerdWith(t, containerd2Dir(t), func(root, state, sock string) string {
		return fmt.Sprintf("version = 3\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = %q\n", root, state, sock, mirrorHosts(t, b, up.host))
	})
	criPull(t, ctrdB, hello)
	out := ctrA.Ctr(t, "images", "ls", "name=="+hello)
	dgst := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
	ctrC.Ctr(t, "images", "pull", "--hosts-dir", mirrorHosts(t, c, up.host), up.host+"/library/hello@"+dgst)
	if got := up.blobGets(); sumGets(got) != sumGets(first) {
		t.Fatalf("pulls through B and C: the registry sent more blobs: %v, was %v", got, first)
	}

	// Three nodes, cold, at once: the Debian image.
	before := up.blobGets()
	debian := up.host + "/library/debian:bookworm"
	ctrB := startContainerdFrom(t, containerd2Dir(t))
	var wg sync.WaitGroup
	for i, pull := range []struct {
		ctrd *Containerd
		d    *shoalDaemon
	}{{ctrA, a}, {ctrB, b}, {ctrC, c}} {
		hosts := mirrorHosts(t, pull.d, up.host)
		wg.Go(func() {
			if out, err := pull.ctrd.ctrCommand("images", "pull", "--hosts-dir", hosts, debian).CombinedOutput(); err != nil {
				t.Errorf("pull %d: %v\n%s", i, err, out)
			}
		})
	}
	wg.Wait()
	after := up.blobGets()
	for d, n := range after {
		if n-before[d] > 1 {
			t.Errorf("three cold pulls at once: the registry sent %s %d times", d, n-before[d])
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The registry goes away: tags resolve as last known, on every node.
	testproc.Stop(up.proc)
	time.Sleep(1100 * time.Millisecond) // past the tag TTL
	fresh := startContainerdFrom(t, containerd2Dir(t))
	fresh.Ctr(t, "images", "pull", "--hosts-dir", mirrorHosts(t, c, up.host), debian)
	d := startShoalDaemon(t, mirror, "--peer", a.Peer, "--peer", b.Peer, "--peer", c.Peer)
	other := startContainerdFrom(t, containerd2Dir(t))
	other.Ctr(t, "images", "pull", "--hosts-dir", mirrorHosts(t, d, up.host), hello)
	start := time.Now()
	resp, err := http.Get("http://" + d.Registry + "/v2/library/nothing/manifests/v1?ns=" + up.host)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a tag no node knows, the registry down: %s", resp.Status)
	}
	t.Logf("a miss with the registry down took %s", time.Since(start))
}

// TestMirrorKeepsPrivateRepositoriesPrivate: a registry that needs
// credentials is mirrored; a client with them pulls through node A; a
// client without them, or with wrong ones, gets 401 or 403 from every
// node for the manifest and the blobs, though A holds them; with them,
// B serves them too.
func TestMirrorKeepsPrivateRepositoriesPrivate(t *testing.T) {
	testenv.Root(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := startDistributionWith(t, htpasswd)
	runTool(t, "skopeo", "copy", "--dest-tls-verify=false", "--dest-creds=alice:s3cret", "oci:"+helloImage(t)+":v1", "docker://"+up.host+"/team/private:v1")
	mirror := "--mirror=" + up.host + "=http://" + up.host
	a := startShoalDaemon(t, mirror)
	b := startShoalDaemon(t, mirror, "--peer", a.Peer)
	ref := up.host + "/team/private:v1"
	ctrd := startContainerdFrom(t, containerd2Dir(t))
	ctrd.Ctr(t, "images", "pull", "--user", "alice:s3cret", "--hosts-dir", mirrorHosts(t, a, up.host), ref)
	out := ctrd.Ctr(t, "images", "ls", "name=="+ref)
	manifest := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)

	good := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	bad := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:guess"))
	// The manifest names the blobs A holds now.
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.Registry+"/v2/team/private/manifests/"+manifest+"?ns="+up.host, nil)
	req.Header.Set("Authorization", good)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("the private manifest: %v", err)
	}
	paths := []string{"/v2/team/private/manifests/v1", "/v2/team/private/manifests/" + manifest, "/v2/team/private/blobs/" + m.Config.Digest.String()}
	for _, l := range m.Layers {
		paths = append(paths, "/v2/team/private/blobs/"+l.Digest.String())
	}
	for _, d := range []*shoalDaemon{a, b} {
		for _, path := range paths {
			for auth, want := range map[string]int{"": http.StatusUnauthorized, bad: http.StatusForbidden, good: http.StatusOK} {
				req, _ := http.NewRequest(http.MethodGet, "http://"+d.Registry+path+"?ns="+up.host, nil)
				req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("%s%s with %q: %s, want %d", d.Registry, path, strings.Fields(auth + " none")[0], resp.Status, want)
				}
			}
		}
	}
}

// TestMirrorReplacesAKilledPeer: on a testbed of 100 Mbit/s links, two
// nodes are asked for the Debian image's layer; one of them (the one the
// digest ranks first) fetches it from the registry, and the other reads it
// from that one as it arrives. The fetching node is killed halfway. The
// other goes on from the byte it reached with the registry (a Range
// request) and its client gets the whole layer, checked.
func TestMirrorReplacesAKilledPeer(t *testing.T) {
	testenv.Root(t)
	tb := testbed.ForTest(t, 3, testbed.Link{Rate: "100mbit", Delay: 5 * time.Millisecond})
	up := startDistributionOn(t, tb.Hosts[0])
	push := tb.Hosts[0].Argv("skopeo", "copy", "--dest-tls-verify=false", "oci:"+debianImage(t)+":bookworm", "docker://"+up.host+"/library/debian:bookworm")
	runTool(t, push[0], push[1:]...)
	layer, data := layoutLayer(t, debianImage(t))
	mirror := "--mirror=" + up.host + "=http://" + up.host
	a := startShoalDaemonOn(t, tb.Hosts[1], mirror, "--metrics-listen", "127.0.0.1:5052")
	b := startShoalDaemonOn(t, tb.Hosts[2], mirror, "--peer", a.Peer, "--metrics-listen", "127.0.0.1:5052")
	path := "/v2/library/debian/blobs/" + layer.Digest.String() + "?ns=" + up.host
	// Each must know the other before asking: otherwise each rightly
	// goes to the registry itself, and there is no peer to kill.
	waitMetrics(t, tb.Hosts[1], "A connected to B", func(status, _ string) bool { return strings.Contains(status, peerID(b)) })
	waitMetrics(t, tb.Hosts[2], "B connected to A", func(status, _ string) bool { return strings.Contains(status, peerID(a)) })

	pull := func(d *shoalDaemon) <-chan error {
		got := make(chan error, 1)
		go func() {
			resp, err := hostClient(*d.host, "").Get("http://" + d.Registry + path)
			if err != nil {
				got <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != http.StatusOK || digest.FromBytes(body) != layer.Digest) {
				err = fmt.Errorf("%s, %d bytes of %d", resp.Status, len(body), len(data))
			}
			got <- err
		}()
		return got
	}
	gotA := pull(a)
	fetching := regexp.MustCompile(`shoal_mirror_received_bytes_total\{registry="[^"]+",source="upstream"\} [1-9]`)
	var fetcher, reader *shoalDaemon
	deadline := time.Now().Add(20 * time.Second)
	for fetcher == nil {
		for _, d := range []*shoalDaemon{a, b} {
			if fetching.MatchString(metricsOf(*d.host, "/metrics")) {
				fetcher = d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 20 s for A or B fetching from the registry")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := gotA
	if reader = b; fetcher == b {
		reader = a
	} else {
		got = pull(b)
	}
	time.Sleep(2 * time.Second)
	if err := fetcher.proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the reader's client, the fetcher killed mid-blob: %v\n%s", err, reader.logs.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the reader's client still waiting two minutes after the fetcher was killed\n%s", reader.logs.String())
	}
	// The registry sent the layer to the fetcher, then from where the
	// reader had reached.
	sent := sentBytes(up, layer.Digest.String())
	if !strings.Contains(up.logs.String(), "/blobs/"+layer.Digest.String()+` HTTP/1.1" 206`) || sent >= 2*layer.Size {
		t.Fatalf("the registry sent %d bytes of a %d-byte layer; the reader went on with a Range request: %v\n%s", sent, layer.Size, strings.Contains(up.logs.String(), `" 206`), reader.logs.String())
	}
	t.Logf("the registry sent %.2fx the layer for both nodes; %s fetched, %s read", float64(sent)/float64(layer.Size), fetcher.host.Name, reader.host.Name)
}

// peerID is the libp2p ID at the end of d's swarm address.
func peerID(d *shoalDaemon) string { return d.Peer[strings.LastIndex(d.Peer, "/")+1:] }

// metricsOf gets path from the metrics listener of the daemon on host, at
// 127.0.0.1:5052 there; "" if it does not answer.
func metricsOf(host testbed.Host, path string) string {
	resp, err := hostClient(host, "").Get("http://127.0.0.1:5052" + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// waitMetrics waits, for at most 20 s, until ok holds of the status and
// the metrics of the daemon on host, served at 127.0.0.1:5052 there.
func waitMetrics(t *testing.T, host testbed.Host, what string, ok func(status, metrics string) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, metrics := metricsOf(host, "/status.json"), metricsOf(host, "/metrics")
		if ok(status, metrics) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 20 s for %s on %s; status:\n%s", what, host.Name, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sentBytesRE matches a response to a GET of a blob in the access log,
// with the bytes sent.
var sentBytesRE = regexp.MustCompile(`"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 20[06] ([0-9]+) `)

// sentBytes is how many bytes of blob d the registry sent.
func sentBytes(d *distribution, blob string) int64 {
	var n int64
	for _, m := range sentBytesRE.FindAllStringSubmatch(d.logs.String(), -1) {
		if m[1] == blob {
			v, _ := strconv.ParseInt(m[2], 10, 64)
			n += v
		}
	}
	return n
}
