package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// pushBlob uploads data to repository name in one request.
func pushBlob(t *testing.T, host, name string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	res := do(t, http.MethodPost, "http://"+host+"/v2/"+name+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(data))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload of %d bytes: %d", len(data), res.StatusCode)
	}
	return d
}

// TestRangesEndingPastAnyBlob: a range whose last byte is the largest
// int64 is the rest of the blob, not an overflow.
func TestRangesEndingPastAnyBlob(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n)
	data := []byte("0123456789")
	d := pushBlob(t, host, "app", data)
	for _, c := range []struct {
		rng  string
		want string
	}{
		{"bytes=0-9223372036854775807", "0123456789"},
		{"bytes=1-9223372036854775807", "123456789"},
		{"bytes=9-9223372036854775807", "9"},
		{"bytes=-9223372036854775807", "0123456789"},
	} {
		res := do(t, http.MethodGet, "http://"+host+"/v2/app/blobs/"+d.String(), nil, "Range", c.rng)
		got, err := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusPartialContent || err != nil || string(got) != c.want {
			t.Errorf("%s: %d, %q (%v), want 206 %q", c.rng, res.StatusCode, got, err, c.want)
			continue
		}
		want := fmt.Sprintf("bytes %d-9/10", 10-len(c.want))
		if res.ContentLength != int64(len(c.want)) || res.Header.Get("Content-Range") != want {
			t.Errorf("%s: Content-Length %d, Content-Range %q, want %d, %q", c.rng, res.ContentLength, res.Header.Get("Content-Range"), len(c.want), want)
		}
	}
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(fds)
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip, so that a test can be several clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: time.Minute}
}

// tooMany checks that res is the spec's 429 with a Retry-After.
func tooMany(t *testing.T, what string, res *http.Response) {
	t.Helper()
	if res.StatusCode != http.StatusTooManyRequests || errorCode(t, res) != "TOOMANYREQUESTS" || res.Header.Get("Retry-After") == "" {
		t.Errorf("%s: %d, Retry-After %q; want 429 TOOMANYREQUESTS with Retry-After", what, res.StatusCode, res.Header.Get("Retry-After"))
	}
}

// TestUnfinishedUploadsHoldNoFiles: sessions started and left unfinished,
// with bytes in them, keep no file open between requests.
func TestUnfinishedUploadsHoldNoFiles(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n)
	c := clientFrom("127.0.0.1")
	send(t, c, http.MethodGet, "http://"+host+"/v2/", nil) // the connection, kept alive
	before := openFiles(t)
	const sessions = 64
	for i := range sessions {
		res := send(t, c, http.MethodPost, "http://"+host+"/v2/app/blobs/uploads/", nil)
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("session %d: %d", i, res.StatusCode)
		}
		io.Copy(io.Discard, res.Body)
		res = send(t, c, http.MethodPatch, "http://"+host+res.Header.Get("Location"), strings.NewReader("some bytes"), "Content-Range", "0-9")
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("session %d: PATCH %d", i, res.StatusCode)
		}
		io.Copy(io.Discard, res.Body)
	}
	if grown := openFiles(t) - before; grown >= sessions/2 {
		t.Errorf("%d unfinished uploads hold %d more open files", sessions, grown)
	}
}

// TestUploadSessionsAreBounded: past the bounds on sessions, in all and
// per client, a new upload gets 429 until one ends.
func TestUploadSessionsAreBounded(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n, WithUploadLimits(UploadLimits{Sessions: 4, PerClient: 2}))
	start := "http://" + host + "/v2/app/blobs/uploads/"
	a, b, c := clientFrom("127.0.0.1"), clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	var first string
	for i := range 2 {
		res := send(t, a, http.MethodPost, start, nil)
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("session %d of a client: %d", i, res.StatusCode)
		}
		if i == 0 {
			first = res.Header.Get("Location")
		}
	}
	tooMany(t, "a third session of one client", send(t, a, http.MethodPost, start, nil))
	data := []byte("a whole blob in one request")
	tooMany(t, "a third, monolithic, upload of one client", send(t, a, http.MethodPost, start+"?digest="+digest.FromBytes(data).String(), bytes.NewReader(data)))
	for i := range 2 {
		if res := send(t, b, http.MethodPost, start, nil); res.StatusCode != http.StatusAccepted {
			t.Fatalf("session %d of another client: %d", i, res.StatusCode)
		}
	}
	tooMany(t, "a fifth session in all", send(t, c, http.MethodPost, start, nil))
	if res := send(t, a, http.MethodDelete, "http://"+host+first, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	if res := send(t, c, http.MethodPost, start, nil); res.StatusCode != http.StatusAccepted {
		t.Errorf("a session after one ended: %d", res.StatusCode)
	}
}

// TestUploadBytesAreBounded: the bytes of unfinished uploads together
// stay under their bound; a part past it gets 429 and the upload stays
// usable where it was.
func TestUploadBytesAreBounded(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n, WithUploadLimits(UploadLimits{Bytes: 1000}))
	u := "http://" + host
	res := do(t, http.MethodPost, u+"/v2/app/blobs/uploads/", nil)
	one := res.Header.Get("Location")
	if res := do(t, http.MethodPatch, u+one, bytes.NewReader(make([]byte, 600)), "Content-Range", "0-599"); res.StatusCode != http.StatusAccepted {
		t.Fatalf("600 bytes: %d", res.StatusCode)
	}
	res = do(t, http.MethodPost, u+"/v2/app/blobs/uploads/", nil)
	two := res.Header.Get("Location")
	tooMany(t, "600 bytes more", do(t, http.MethodPatch, u+two, bytes.NewReader(make([]byte, 600)), "Content-Range", "0-599"))
	// Streamed, without a length: what fits is kept.
	tooMany(t, "600 bytes more, streamed", do(t, http.MethodPatch, u+two, io.MultiReader(bytes.NewReader(make([]byte, 600)))))
	res = do(t, http.MethodGet, u+two, nil)
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Range") != "0-399" {
		t.Errorf("upload after a part past the bound: %d, Range %q, want 204 0-399", res.StatusCode, res.Header.Get("Range"))
	}
	big := make([]byte, 2000)
	tooMany(t, "a monolithic upload past the bound", do(t, http.MethodPost, u+"/v2/app/blobs/uploads/?digest="+digest.FromBytes(big).String(), bytes.NewReader(big)))
	if res := do(t, http.MethodDelete, u+one, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	d := pushBlob(t, host, "app", make([]byte, 500))
	if res := do(t, http.MethodHead, u+"/v2/app/blobs/"+d.String(), nil); res.StatusCode != http.StatusOK {
		t.Errorf("blob uploaded once room was made: %d", res.StatusCode)
	}
}

// slowReader sends its bytes one at a time, a pause before each.
type slowReader struct {
	data  []byte
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	p[0] = s.data[0]
	s.data = s.data[1:]
	return 1, nil
}

// TestUploadIdleCountsFromTheLastRequestsEnd: a part that takes longer
// to arrive than the idle bound does not leave its upload to expire as
// soon as it ends.
func TestUploadIdleCountsFromTheLastRequestsEnd(t *testing.T) {
	n := memstore.New()
	const idle = 300 * time.Millisecond
	host, rg := serve(t, n, WithUploadLimits(UploadLimits{Idle: idle}))
	u := "http://" + host
	loc := do(t, http.MethodPost, u+"/v2/app/blobs/uploads/", nil).Header.Get("Location")
	if res := do(t, http.MethodPatch, u+loc, &slowReader{data: []byte("0123456789"), pause: idle / 5}); res.StatusCode != http.StatusAccepted {
		t.Fatalf("slow part: %d", res.StatusCode)
	}
	rg.uploads.expire(time.Now().Add(-idle))
	if res := do(t, http.MethodGet, u+loc, nil); res.StatusCode != http.StatusNoContent {
		t.Errorf("upload right after a slow part: %d", res.StatusCode)
	}
}

// randomCID names content that nobody has.
func randomCID(t *testing.T) cid.Cid {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestRequestsForUnknownImagesStopWhenTheirClientsLeave: the work of a
// request for an image nobody has, fetching its tree from peers, ends
// when the client goes away, not when the fetch timeout does.
func TestRequestsForUnknownImagesStopWhenTheirClientsLeave(t *testing.T) {
	peer := testnode.Online(t, "/tcp/")
	n := testnode.Online(t, "/tcp/", peer)
	host, _ := serve(t, n, WithFetchTimeout(5*time.Minute))
	c := &http.Client{Transport: &http.Transport{}}
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	send(t, c, http.MethodGet, "http://"+host+"/v2/", nil)
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const clients = 50
	for i := range clients {
		root := randomCID(t)
		// Two clients ask for each image, so that fetches are shared.
		for range 2 - i%2 {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/ipfs/"+root.String()+"/manifests/latest", nil)
				if res, err := c.Do(req); err == nil {
					res.Body.Close()
					t.Errorf("a request for an unknown image answered %d before its client left", res.StatusCode)
				}
			})
		}
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	c.Transport.(*http.Transport).CloseIdleConnections()

	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > baseline+20 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 20s after %d clients left, %d before they came; still running:\n%s",
				runtime.NumGoroutine(), clients, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTreeFetchesAreBounded: past the bound on images fetched at once, a
// request for another gets 429; one for an image already being fetched
// joins its fetch.
func TestTreeFetchesAreBounded(t *testing.T) {
	n := testnode.Online(t, "/tcp/")
	host, rg := serve(t, n, WithFetchTimeout(5*time.Minute))
	rg.trees.maxFetches = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	roots := []cid.Cid{randomCID(t), randomCID(t)}
	for _, root := range roots {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/ipfs/"+root.String()+"/manifests/latest", nil)
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rg.trees.mu.Lock()
		started := len(rg.trees.fetches)
		rg.trees.mu.Unlock()
		if started == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fetches started, want 2", started)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tooMany(t, "a third image at once", do(t, http.MethodGet, "http://"+host+"/v2/ipfs/"+randomCID(t).String()+"/manifests/latest", nil))
	joined := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/ipfs/"+roots[0].String()+"/manifests/latest", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			joined <- 0
			return
		}
		res.Body.Close()
		joined <- res.StatusCode
	}()
	select {
	case code := <-joined:
		t.Errorf("a request for an image being fetched answered %d rather than wait", code)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
}

// TestClientThatStopsReadingIsCutOff: a client that reads the start of a
// large blob and then neither reads nor leaves is cut off: the request's
// handler returns, letting go of the blob's reader, while the client
// still holds its connection and has read almost nothing.
func TestClientThatStopsReadingIsCutOff(t *testing.T) {
	n := memstore.New()
	host, rg := serve(t, n, WithClientTimeout(500*time.Millisecond))
	data := make([]byte, 256<<20)
	rand.Read(data)
	d := pushBlob(t, host, "app", data)

	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rg.ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /v2/app/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", d, host)
	if _, err := io.ReadFull(conn, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	// The client stops reading here, and keeps its connection open.
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the request of a client that stopped reading still holds its blob")
	}
}

// TestClientThatStopsSendingIsCutOff: a part whose client stops sending
// mid-body ends, keeping the bytes that came, and frees its upload for
// the next request.
func TestClientThatStopsSendingIsCutOff(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n, WithClientTimeout(500*time.Millisecond))
	loc := do(t, http.MethodPost, "http://"+host+"/v2/app/blobs/uploads/", nil).Header.Get("Location")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n0123456789", loc, host)
	// The client sends no more, and keeps its connection open.
	c := &http.Client{Timeout: 30 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := c.Get("http://" + host + loc)
		if err != nil {
			t.Fatalf("upload status while a part is stalled: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("upload status: %d", res.StatusCode)
		}
		if res.Header.Get("Range") == "0-9" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload status: Range %q, want the 10 bytes that came", res.Header.Get("Range"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestManifestsPastTheDocumentBounds: a pushed index or manifest that
// names more than the bounds allow is MANIFEST_INVALID, and so is an
// ipfs/CID image nested deeper than they allow.
func TestManifestsPastTheDocumentBounds(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n)
	u := "http://" + host
	config := pushBlob(t, host, "app", []byte(`{"os":"linux","architecture":"amd64"}`))
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: config, Size: 37}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: config, Size: 37}}
	for range image.MaxManifestLayers + 1 {
		m.Layers = append(m.Layers, layer)
	}
	data, _ := json.Marshal(m)
	res := do(t, http.MethodPut, u+"/v2/app/manifests/many-layers", bytes.NewReader(data), "Content-Type", ocispec.MediaTypeImageManifest)
	if res.StatusCode != http.StatusBadRequest || errorCode(t, res) != "MANIFEST_INVALID" {
		t.Errorf("a manifest of %d layers: %d", len(m.Layers), res.StatusCode)
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for range image.MaxIndexManifests + 1 {
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: config, Size: 37})
	}
	data, _ = json.Marshal(idx)
	res = do(t, http.MethodPut, u+"/v2/app/manifests/many-manifests", bytes.NewReader(data), "Content-Type", ocispec.MediaTypeImageIndex)
	if res.StatusCode != http.StatusBadRequest || errorCode(t, res) != "MANIFEST_INVALID" {
		t.Errorf("an index of %d manifests: %d", len(idx.Manifests), res.StatusCode)
	}

	d := addJSON(t, n, ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: addJSON(t, n, ocispec.MediaTypeImageConfig, map[string]string{"os": "linux"})})
	for range image.MaxDepth {
		d = addJSON(t, n, ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{d}})
	}
	root := testimage.AddRoot(t, n, d)
	res = do(t, http.MethodGet, u+"/v2/ipfs/"+root.String()+"/manifests/latest", nil)
	if res.StatusCode != http.StatusBadRequest || errorCode(t, res) != "MANIFEST_INVALID" {
		t.Errorf("an image nested %d deep: %d", image.MaxDepth+1, res.StatusCode)
	}
}
