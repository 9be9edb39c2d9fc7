package mirror_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"github.com/shoal-ipfs/shoal/pkg/routing"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// origin is an upstream registry (go-containerregistry's) that counts the
// blobs it sends and the requests for manifests it answers.
type origin struct {
	srv  *httptest.Server
	host string

	mu        sync.Mutex
	gets      map[string]int
	manifests map[string]int // by "METHOD reference"
	down      bool
	stalled   map[string]chan struct{} // blobs whose GETs wait for the channel
}

func newOrigin(t *testing.T) *origin {
	o := &origin{gets: map[string]int{}, manifests: map[string]int{}, stalled: map[string]chan struct{}{}}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		down := o.down
		var stall chan struct{}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
			o.gets[d]++
			stall = o.stalled[d]
		}
		if before, ref, ok := strings.Cut(r.URL.Path, "/manifests/"); ok && before != "" {
			o.manifests[r.Method+" "+ref]++
		}
		o.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if stall != nil {
			select {
			case <-stall:
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(o.srv.Close)
	o.host = strings.TrimPrefix(o.srv.URL, "http://")
	return o
}

func (o *origin) push(t *testing.T, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(o.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	o.gets = map[string]int{}
	o.manifests = map[string]int{}
	o.mu.Unlock()
}

// blobGets is how many times each blob left the origin.
func (o *origin) blobGets() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range o.gets {
		out[k] = v
	}
	return out
}

// manifestRequests is how many requests for each manifest reference the
// origin answered, by "METHOD reference".
func (o *origin) manifestRequests() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.manifests)
}

// stall makes GETs of blob d wait until the returned function is called.
func (o *origin) stall(t *testing.T, d digest.Digest) func() {
	ch := make(chan struct{})
	o.mu.Lock()
	o.stalled[d.String()] = ch
	o.mu.Unlock()
	release := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

func (o *origin) setDown(down bool) {
	o.mu.Lock()
	o.down = down
	o.mu.Unlock()
}

// mirrorNode is a node whose registry mirrors o, connected to peers.
type mirrorNode struct {
	n   *node.Node
	m   *mirror.Mirror
	srv *httptest.Server
}

func newMirrorNode(t *testing.T, o *origin, ttl time.Duration, peers ...*mirrorNode) *mirrorNode {
	t.Helper()
	return newMirrorNodeWith(t, o, func(opts *mirror.Options) { opts.TagTTL = ttl }, peers...)
}

func newMirrorNodeWith(t *testing.T, o *origin, configure func(*mirror.Options), peers ...*mirrorNode) *mirrorNode {
	t.Helper()
	return newRoutedMirrorNode(t, o, nil, configure, peers...)
}

// newRoutedMirrorNode is a mirror node that finds holders beyond its
// connected peers in table (none if nil).
func newRoutedMirrorNode(t *testing.T, o *origin, table *routing.Memory, configure func(*mirror.Options), peers ...*mirrorNode) *mirrorNode {
	t.Helper()
	return newMirrorNodeOver(t, o, table, func(s mirror.Store) mirror.Store { return s }, configure, peers...)
}

// newMirrorNodeOver is newRoutedMirrorNode with the node's store as wrap
// makes it.
func newMirrorNodeOver(t *testing.T, o *origin, table *routing.Memory, wrap func(mirror.Store) mirror.Store, configure func(*mirror.Options), peers ...*mirrorNode) *mirrorNode {
	t.Helper()
	var ns []*node.Node
	for _, p := range peers {
		ns = append(ns, p.n)
	}
	n := testnode.Online(t, "/tcp/", ns...)
	var router routing.Router
	if table != nil {
		router = table.For(peer.AddrInfo{ID: n.Host().ID(), Addrs: n.Host().Addrs()})
	}
	opts := mirror.Options{
		Endpoints: []upstream.Endpoint{{Registry: o.host, URL: o.srv.URL}},
		Spool:     filepath.Join(t.TempDir(), "spool"),
		Peers:     mirror.NewPeers(n.Host(), router, false),
	}
	configure(&opts)
	m, err := mirror.New(wrap(n), n.Metadata("mirror"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rg, err := registry.New(n, n.Metadata("registry"), filepath.Join(t.TempDir(), "uploads"), registry.WithMirror(m))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rg)
	t.Cleanup(srv.Close)
	return &mirrorNode{n: n, m: m, srv: srv}
}

// get fetches a mirror request's path with ns, and checks the digest the
// response names against its body.
func (mn *mirrorNode) get(t *testing.T, ns, path string) ([]byte, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, mn.srv.URL+path+"?ns="+ns, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ","))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return data, resp
}

// pull reads repo:tag's manifest and blobs through mn and checks each
// against what the origin has.
func (mn *mirrorNode) pull(t *testing.T, o *origin, repo, tag string, img v1.Image) {
	t.Helper()
	want, _ := img.RawManifest()
	data, resp := mn.get(t, o.host, "/v2/"+repo+"/manifests/"+tag)
	if resp.StatusCode != http.StatusOK || string(data) != string(want) {
		t.Fatalf("manifest %s:%s: %s %q", repo, tag, resp.Status, data)
	}
	d := digest.FromBytes(data)
	if resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("manifest digest header %s, body %s", resp.Header.Get("Docker-Content-Digest"), d)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		data, resp := mn.get(t, o.host, "/v2/"+repo+"/blobs/"+b.Digest.String())
		if resp.StatusCode != http.StatusOK || digest.FromBytes(data) != b.Digest || int64(len(data)) != b.Size {
			t.Fatalf("blob %s: %s, %d bytes %.300s", b.Digest, resp.Status, len(data), data)
		}
	}
	// By digest too.
	if data, resp := mn.get(t, o.host, "/v2/"+repo+"/manifests/"+d.String()); resp.StatusCode != http.StatusOK || string(data) != string(want) {
		t.Fatalf("manifest by digest: %s", resp.Status)
	}
}

func testImage(t *testing.T, seed int64, sizes ...int64) v1.Image {
	img, err := testimage.Image(seed, v1.Platform{OS: "linux", Architecture: "amd64"}, sizes...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func maxGets(gets map[string]int) int {
	m := 0
	for _, n := range gets {
		m = max(m, n)
	}
	return m
}

func TestMirrorPullsOnceThenFromPeers(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 1, 3<<20, 1<<20, 10)
	o.push(t, "library/app:v1", img)
	a := newMirrorNode(t, o, time.Minute)
	b := newMirrorNode(t, o, time.Minute, a)
	c := newMirrorNode(t, o, time.Minute, a, b)

	a.pull(t, o, "library/app", "v1", img)
	first := o.blobGets()
	if len(first) != 4 || maxGets(first) != 1 {
		t.Fatalf("cold pull: the origin sent %v, want each of 4 blobs once", first)
	}
	b.pull(t, o, "library/app", "v1", img)
	c.pull(t, o, "library/app", "v1", img)
	if again := o.blobGets(); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("pulls from peers: the origin sent %v, want nothing more than %v", again, first)
	}
	// What c got is stored there, recorded and kept: a pull again is local.
	a.srv.Close()
	b.srv.Close()
	c.pull(t, o, "library/app", "v1", img)
}

// TestMirrorFindsHoldersThroughTheRouter: b is connected to nobody; the
// router (the DHT in a daemon) leads it to a, which pulled first.
// A cold pull by tag asks the upstream about the tag once: the access
// check's HEAD of the manifest says what the tag names, and the tag's
// resolve, which would send the same request, takes its answer.
func TestMirrorResolvesATagWithItsAccessCheck(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 5, 1<<20)
	o.push(t, "library/app:v1", img)
	a := newMirrorNode(t, o, time.Minute)
	a.pull(t, o, "library/app", "v1", img)
	got := o.manifestRequests()
	tagged := got["HEAD v1"] + got["GET v1"]
	if got["HEAD v1"] != 1 || tagged != 1 {
		t.Fatalf("the upstream answered %v for the tag, want one HEAD", got)
	}
}

func TestMirrorFindsHoldersThroughTheRouter(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 7, 2<<20, 10)
	o.push(t, "library/far:v1", img)
	table := routing.NewMemory()
	a := newRoutedMirrorNode(t, o, table, func(*mirror.Options) {})
	b := newRoutedMirrorNode(t, o, table, func(*mirror.Options) {})
	if len(b.n.Host().Network().Peers()) != 0 {
		t.Fatalf("b is connected to %v; the test needs it alone", b.n.Host().Network().Peers())
	}
	a.pull(t, o, "library/far", "v1", img)
	first := o.blobGets()
	b.pull(t, o, "library/far", "v1", img)
	if again := o.blobGets(); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("b's pull: the origin sent %v, want nothing more than %v", again, first)
	}
	if b.n.Host().Network().Connectedness(a.n.Host().ID()) != network.Connected {
		t.Error("b pulled from a without connecting to it?")
	}
}

func TestMirrorColdRolloutFetchesEachBlobOnce(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 2, 8<<20, 2<<20)
	o.push(t, "team/app:v2", img)
	// Timeouts that a loaded machine (the race detector, CI) does not run
	// into: a slow answer or a stall would rightly send a node upstream.
	patient := func(opts *mirror.Options) {
		opts.StallTimeout = 20 * time.Second
		opts.Peers.AskTimeout = 5 * time.Second
	}
	a := newMirrorNodeWith(t, o, patient)
	b := newMirrorNodeWith(t, o, patient, a)
	c := newMirrorNodeWith(t, o, patient, a, b)
	var wg sync.WaitGroup
	for _, mn := range []*mirrorNode{a, b, c} {
		wg.Go(func() { mn.pull(t, o, "team/app", "v2", img) })
	}
	wg.Wait()
	if gets := o.blobGets(); maxGets(gets) != 1 {
		t.Fatalf("three nodes at once: the origin sent %v, want each blob once", gets)
	}
}

func TestMirrorServesTagsThroughAnOutage(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 3, 1<<20)
	o.push(t, "library/app:v3", img)
	a := newMirrorNode(t, o, time.Nanosecond)
	b := newMirrorNode(t, o, time.Nanosecond, a)
	a.pull(t, o, "library/app", "v3", img)
	o.setDown(true)
	// a resolved the tag itself; b never did and learns it from a.
	a.pull(t, o, "library/app", "v3", img)
	b.pull(t, o, "library/app", "v3", img)
	// A tag nobody knows: a quick 404, for containerd to go on.
	start := time.Now()
	_, resp := b.get(t, o.host, "/v2/library/app/manifests/v4")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown tag in an outage: %s", resp.Status)
	}
	t.Logf("a miss in an outage took %s", time.Since(start))
}

func TestMirrorRefusesRegistriesItDoesNotMirror(t *testing.T) {
	o := newOrigin(t)
	a := newMirrorNode(t, o, time.Minute)
	_, resp := a.get(t, "docker.io", "/v2/library/debian/manifests/12")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a registry not mirrored: %s", resp.Status)
	}
	_, resp = a.get(t, "no/such", "/v2/library/debian/manifests/12")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a bad ns: %s", resp.Status)
	}
}

// A mirrored image pulled by tag becomes an image of the node: listed with
// its source, under a root CID that pulls and mounts like a pushed one.
// Over the cache budget, the least recently served content goes, and the
// image with it.
func TestMirrorKeepsImagesWithinABudget(t *testing.T) {
	o := newOrigin(t)
	old, recent := testImage(t, 5, 2<<20), testImage(t, 6, 2<<20)
	o.push(t, "library/old:v1", old)
	o.push(t, "library/recent:v1", recent)
	a := newMirrorNodeWith(t, o, func(opts *mirror.Options) {
		opts.CacheSize = 3 << 20
		opts.Collect = func(ctx context.Context) error { return nil }
	})
	a.pull(t, o, "library/old", "v1", old)
	images := waitImages(t, a, 1)
	if images[0].Name != o.host+"/library/old:v1" {
		t.Fatalf("mirrored images: %+v", images)
	}
	root, err := cid.Decode(images[0].Root)
	if err != nil {
		t.Fatal(err)
	}
	img, err := a.n.Image(context.Background(), root)
	if err != nil || img.Source != images[0].Name {
		t.Fatalf("the node's image %s: %+v %v", root, img, err)
	}
	time.Sleep(10 * time.Millisecond)
	a.pull(t, o, "library/recent", "v1", recent)
	waitImages(t, a, 2)
	if err := a.m.EnforceBudget(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.n.Image(context.Background(), root); err == nil {
		t.Fatalf("the least recently served image is still pinned past the budget")
	}
	gets := o.blobGets()
	a.pull(t, o, "library/recent", "v1", recent)
	if fmt.Sprint(o.blobGets()) != fmt.Sprint(gets) {
		t.Fatalf("the recent image went too: %v, was %v", o.blobGets(), gets)
	}
}

// A node that passes blobs along keeps the images it has whole as they
// are until it is done: converting them indexes every layer, which would
// take the CPU from the rollout.
func TestMirrorConvertsOnceItPassesNothingAlong(t *testing.T) {
	o := newOrigin(t)
	img := testImage(t, 5, 1<<20)
	o.push(t, "library/app:v1", img)
	busy, _ := layerOf(t, o, "library/busy:v1")
	release := o.stall(t, busy)
	a := newMirrorNodeWith(t, o, func(opts *mirror.Options) { opts.StallTimeout = time.Minute })
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(a.srv.URL + "/v2/library/busy/blobs/" + busy.String() + "?ns=" + o.host)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); o.blobGets()[busy.String()] == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the busy blob's download did not start")
		}
	}
	a.pull(t, o, "library/app", "v1", img)
	time.Sleep(5 * time.Second) // two rounds of conversion
	if images, err := a.m.Images(context.Background()); err != nil || len(images) != 0 {
		t.Fatalf("converted while a download ran: %+v %v", images, err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if images := waitImages(t, a, 1); images[0].Name != o.host+"/library/app:v1" {
		t.Fatalf("mirrored images: %+v", images)
	}
}

// waitImages waits until mn's mirror has kept n images.
func waitImages(t *testing.T, mn *mirrorNode, n int) []mirror.Image {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		images, err := mn.m.Images(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(images) >= n {
			return images
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mirrored images kept, want %d", len(images), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
