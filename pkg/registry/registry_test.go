package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// serve runs a registry over n on a loopback port and returns its host:port.
func serve(t testing.TB, st Store, opts ...Option) (string, *Registry) {
	t.Helper()
	// A node keeps the registry's records with its own, so that they
	// outlive a restart; elsewhere they are kept in memory.
	var meta ds.Batching = dssync.MutexWrap(ds.NewMapDatastore())
	if n, ok := st.(*node.Node); ok {
		meta = n.Metadata("registry")
	}
	rg, err := New(st, meta, t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rg)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), rg
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func do(t *testing.T, method, url string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	return send(t, http.DefaultClient, method, url, body, hdr...)
}

// send makes a request with client c; hdr are header names and values.
func send(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// errorCode reads the spec's error body and returns its first code.
func errorCode(t *testing.T, res *http.Response) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("%s %s: %d without an error body (%v)", res.Request.Method, res.Request.URL.Path, res.StatusCode, err)
	}
	return body.Errors[0].Code
}

// TestPushWithAnOCIClientThenPullByTagAndByCID: go-containerregistry pushes
// an image by tag; the image lands in IPFS, pinned and listed under the
// root CID the registry names in a header; it pulls back by tag unchanged
// and by ipfs/CID with every digest valid.
func TestPushWithAnOCIClientThenPullByTagAndByCID(t *testing.T) {
	ctx := context.Background()
	n := memstore.New()
	host, _ := serve(t, n)
	img, err := testimage.Image(1, testimage.Platforms[0], 300<<10, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, host+"/team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	res := do(t, http.MethodHead, "http://"+host+"/v2/team/app/manifests/1", nil)
	root, err := cid.Decode(res.Header.Get(RootHeader))
	if err != nil {
		t.Fatalf("HEAD manifest: %s header %q: %v", RootHeader, res.Header.Get(RootHeader), err)
	}
	rec, err := n.Image(ctx, root)
	if err != nil {
		t.Fatalf("pushed image not listed: %v", err)
	}
	if rec.Source != host+"/team/app:1" || len(rec.Platforms) != 1 || rec.Platforms[0] != "linux/amd64" {
		t.Errorf("image record %+v", rec)
	}

	back, err := remote.Image(ref(t, host+"/team/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := img.Digest()
	if got, _ := back.Digest(); got != wantDigest {
		t.Errorf("pulled by tag: digest %s, pushed %s", got, wantDigest)
	}
	if err := validate.Image(back); err != nil {
		t.Error(err)
	}
	byCID, err := remote.Image(ref(t, host+"/ipfs/"+root.String()+":latest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(byCID); err != nil {
		t.Errorf("pulled by CID: %v", err)
	}
	wantLayers, _ := img.Layers()
	gotLayers, _ := byCID.Layers()
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("pulled by CID: %d layers, pushed %d", len(gotLayers), len(wantLayers))
	}
	for i := range wantLayers {
		w, _ := wantLayers[i].Digest()
		g, _ := gotLayers[i].Digest()
		if w != g {
			t.Errorf("layer %d: %s, pushed %s", i, g, w)
		}
	}
	m, _ := byCID.Manifest()
	for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if len(l.URLs) > 0 {
			t.Errorf("a manifest served by CID has urls %v, which copying clients take for a foreign layer", l.URLs)
		}
	}
	if m.Layers[0].Annotations[layerindex.AnnotationIndex] == "" {
		t.Errorf("a pushed layer has no index: %v", m.Layers[0].Annotations)
	}
}

// TestPullByCIDFromAPeer: node B's registry serves a multi-platform image
// whose blocks are only on node A, with HEAD, Range and errors right.
func TestPullByCIDFromAPeer(t *testing.T) {
	ctx := context.Background()
	a := testnode.Online(t, "/tcp/")
	pushed := testimage.Push(ctx, t, a, testimage.IndexLayout(t, 7, 600<<10, 3000), image.PushOptions{})
	b := testnode.Online(t, "/tcp/", a)
	host, _ := serve(t, b, WithFetchTimeout(10*time.Second))
	base := "http://" + host + "/v2/ipfs/" + pushed.Root.String()

	idx, err := remote.Index(ref(t, host+"/ipfs/"+pushed.Root.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("index pulled through B: %v", err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(im.Manifests))
	}
	img, _ := idx.Image(im.Manifests[0].Digest)
	layers, _ := img.Layers()
	l := layers[0]
	ld, _ := l.Digest()
	rc, _ := l.Compressed()
	whole, _ := io.ReadAll(rc)

	res := do(t, http.MethodHead, base+"/blobs/"+ld.String(), nil)
	if res.StatusCode != 200 || res.ContentLength != int64(len(whole)) || res.Header.Get("Docker-Content-Digest") != ld.String() {
		t.Errorf("HEAD blob: %d, length %d, digest %q", res.StatusCode, res.ContentLength, res.Header.Get("Docker-Content-Digest"))
	}
	res = do(t, http.MethodGet, base+"/blobs/"+ld.String(), nil, "Range", "bytes=1000-300999")
	part, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusPartialContent || !bytes.Equal(part, whole[1000:301000]) ||
		res.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-300999/%d", len(whole)) {
		t.Errorf("Range: %d, %d bytes, Content-Range %q", res.StatusCode, len(part), res.Header.Get("Content-Range"))
	}
	res = do(t, http.MethodGet, base+"/blobs/"+ld.String(), nil, "Range", fmt.Sprintf("bytes=%d-", len(whole)))
	if res.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("Range past the end: %d", res.StatusCode)
	}
	res = do(t, http.MethodGet, base+"/blobs/"+digest.FromString("nope").String(), nil)
	if res.StatusCode != 404 || errorCode(t, res) != "BLOB_UNKNOWN" {
		t.Errorf("blob not in the image: %d", res.StatusCode)
	}
	res = do(t, http.MethodPut, base+"/manifests/latest", strings.NewReader("{}"))
	if res.StatusCode != http.StatusForbidden || errorCode(t, res) != "DENIED" {
		t.Errorf("push to ipfs/CID: %d", res.StatusCode)
	}
	res = do(t, http.MethodGet, base+"/tags/list", nil)
	var tags struct{ Tags []string }
	if err := json.NewDecoder(res.Body).Decode(&tags); err != nil || len(tags.Tags) != 1 || tags.Tags[0] != "latest" {
		t.Errorf("tags of ipfs/CID: %v %v", tags, err)
	}
}

// TestTagsSurviveRestart: the tag → image mapping is on disk.
func TestTagsSurviveRestart(t *testing.T) {
	home := t.TempDir()
	n := testnode.Offline(t, home)
	host, _ := serve(t, n)
	img, _ := testimage.Image(3, testimage.Platforms[1], 2000)
	if err := remote.Write(ref(t, host+"/app:v2"), img); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n = testnode.Offline(t, home)
	defer n.Close()
	host, _ = serve(t, n)
	back, err := remote.Image(ref(t, host+"/app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(back); err != nil {
		t.Error(err)
	}
	res := do(t, http.MethodGet, "http://"+host+"/v2/_catalog", nil)
	var cat struct{ Repositories []string }
	if err := json.NewDecoder(res.Body).Decode(&cat); err != nil || len(cat.Repositories) != 1 || cat.Repositories[0] != "app" {
		t.Errorf("catalog after restart: %v %v", cat, err)
	}
}

// TestBadInput: malformed requests get the spec's error codes, and
// content that does not match its digest is never stored.
func TestBadInput(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n, WithMaxManifestSize(1000))
	u := "http://" + host
	good := digest.FromString("x").String()
	for _, c := range []struct {
		method, path string
		body         string
		status       int
		code         string
	}{
		{"GET", "/v2/UPPER/manifests/latest", "", 400, "NAME_INVALID"},
		{"GET", "/v2/a..b/tags/list", "", 400, "NAME_INVALID"},
		{"GET", "/v2/" + strings.Repeat("a/", 200) + "a/blobs/" + good, "", 400, "NAME_INVALID"},
		{"GET", "/v2/app/blobs/sha256:short", "", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/manifests/bad%20tag", "", 400, "MANIFEST_INVALID"},
		{"GET", "/v2/app/manifests/" + good, "", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/app/manifests/latest", "", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/app/blobs/" + good, "", 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/app/blobs/uploads/0123456789abcdef0123456789abcdef", "", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"PATCH", "/v2/app/blobs/uploads/../../x", "", 404, "NOT_FOUND"},
		{"GET", "/v2/app/nothing/here", "", 404, "NOT_FOUND"},
		{"GET", "/v2/ipfs/notacid/manifests/latest", "", 404, "NAME_UNKNOWN"},
		{"PUT", "/v2/app/manifests/v1", "not json", 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/app/manifests/v1", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + good + `","size":1},"layers":[]}`, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"PUT", "/v2/app/manifests/v1", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"a":"` + strings.Repeat("a", 2000) + `"}}`, 413, "SIZE_INVALID"},
		{"PUT", "/v2/app/manifests/" + good, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, 400, "DIGEST_INVALID"},
		{"DELETE", "/v2/app/manifests/" + good, "", 404, "MANIFEST_UNKNOWN"},
		{"DELETE", "/v2/app/blobs/" + good, "", 404, "BLOB_UNKNOWN"},
		{"POST", "/v2/app/blobs/uploads/?digest=" + good, "not x", 400, "DIGEST_INVALID"},
	} {
		ct := "application/vnd.oci.image.index.v1+json"
		if strings.Contains(c.body, `"config"`) {
			ct = "application/vnd.oci.image.manifest.v1+json"
		}
		res := do(t, c.method, u+c.path, strings.NewReader(c.body), "Content-Type", ct)
		if res.StatusCode != c.status || errorCode(t, res) != c.code {
			t.Errorf("%s %.80s: %d, want %d %s", c.method, c.path, res.StatusCode, c.status, c.code)
		}
	}
	if got := n.Blocks(); got != 0 {
		t.Errorf("%d blocks stored after rejected uploads", got)
	}

	// A chunked upload whose bytes do not match: rejected, nothing kept.
	res := do(t, "POST", u+"/v2/app/blobs/uploads/", nil)
	loc := res.Header.Get("Location")
	do(t, "PATCH", u+loc, strings.NewReader(strings.Repeat("y", 5000)), "Content-Range", "0-4999")
	res = do(t, "PATCH", u+loc, strings.NewReader("zz"), "Content-Range", "10-11")
	if res.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("out-of-order chunk: %d", res.StatusCode)
	}
	res = do(t, "PUT", u+loc+"?digest="+good, nil)
	if res.StatusCode != 400 || errorCode(t, res) != "DIGEST_INVALID" {
		t.Errorf("wrong digest: %d", res.StatusCode)
	}
	if res := do(t, "GET", u+loc, nil); res.StatusCode != 404 {
		t.Errorf("upload still there after a digest mismatch: %d", res.StatusCode)
	}
	if got := n.Blocks(); got != 0 {
		t.Errorf("%d blocks stored after a mismatched upload", got)
	}
}

// TestSameBlobPushedTwiceAtOnce: two uploads of one blob race; both
// succeed and the blob is served whole.
func TestSameBlobPushedTwiceAtOnce(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n)
	data := bytes.Repeat([]byte("shoal"), 300_000)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := http.Post("http://"+host+"/v2/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(data))
			if err == nil {
				codes[i] = res.StatusCode
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusCreated {
			t.Errorf("upload %d: %d", i, c)
		}
	}
	res := do(t, "GET", "http://"+host+"/v2/app/blobs/"+d.String(), nil)
	got, _ := io.ReadAll(res.Body)
	if !bytes.Equal(got, data) {
		t.Errorf("blob served: %d bytes, want %d", len(got), len(data))
	}
}

type failingReader struct {
	r     io.Reader
	after int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	p = p[:min(len(p), f.after)]
	n, err := f.r.Read(p)
	f.after -= n
	return n, err
}

// TestClientsThatGoAway: an upload cut short keeps its bytes for a resume
// until it expires; a download cut short releases the node, so GC runs.
func TestClientsThatGoAway(t *testing.T) {
	n := memstore.New()
	host, rg := serve(t, n)
	u := "http://" + host

	res := do(t, "POST", u+"/v2/app/blobs/uploads/", nil)
	loc := res.Header.Get("Location")
	req, _ := http.NewRequest("PATCH", u+loc, &failingReader{r: bytes.NewReader(make([]byte, 1<<20)), after: 100_000})
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
	res = do(t, "GET", u+loc, nil)
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("upload status after a cut: %d", res.StatusCode)
	}
	rg.uploads.expire(time.Now().Add(time.Minute))
	if res := do(t, "GET", u+loc, nil); res.StatusCode != 404 {
		t.Errorf("expired upload still answers: %d", res.StatusCode)
	}
	if got := n.Blocks(); got != 0 {
		t.Errorf("%d blocks stored for an unfinished upload", got)
	}

	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	d := digest.FromBytes(data)
	if res := do(t, "POST", u+"/v2/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(data)); res.StatusCode != 201 {
		t.Fatalf("upload: %d", res.StatusCode)
	}
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v2/app/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", d, host)
	io.ReadFull(conn, make([]byte, 4096))
	conn.Close()
	res = do(t, "GET", u+"/v2/app/blobs/"+d.String(), nil)
	got, _ := io.ReadAll(res.Body)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Error("blob changed after GC")
	}
}

// TestContentNoPeerHas ends with a registry error, not a hung request.
func TestContentNoPeerHas(t *testing.T) {
	n := testnode.Online(t, "/tcp/")
	host, _ := serve(t, n, WithFetchTimeout(time.Second))
	missing, _ := cid.Decode("bafkreie7ohywtosou76tasm7j63yigtzxe7d5zqus4zu3j6oltvgtibeom")
	client := &http.Client{Timeout: time.Minute}
	res, err := client.Get("http://" + host + "/v2/ipfs/" + missing.String() + "/manifests/latest")
	if err != nil {
		t.Fatalf("request for content nobody has: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 404 || errorCode(t, res) != "MANIFEST_UNKNOWN" {
		t.Errorf("content nobody has: %d", res.StatusCode)
	}
}

// addJSON adds v to n as a blob and returns its descriptor with its CID.
func addJSON(t *testing.T, n Store, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	return testimage.AddJSON(t, n, mediaType, v)
}

func addBlob(t *testing.T, n Store, mediaType string, data []byte, d digest.Digest) ocispec.Descriptor {
	t.Helper()
	return testimage.AddBlob(t, n, mediaType, data, d)
}

// TestBlobThatDoesNotMatchItsDigestIsCutOff: an image in IPFS whose layer
// descriptor names a digest its bytes do not have. The registry sends the
// bytes as they stream but cuts the response off at the end instead of
// completing it, so no client takes them for the blob.
func TestBlobThatDoesNotMatchItsDigestIsCutOff(t *testing.T) {
	n := memstore.New()
	host, _ := serve(t, n)
	data := bytes.Repeat([]byte("not what the manifest says "), 40000)
	layer := addBlob(t, n, ocispec.MediaTypeImageLayerGzip, data, digest.FromString("something else"))
	config := addJSON(t, n, ocispec.MediaTypeImageConfig, map[string]string{"os": "linux", "architecture": "amd64"})
	manifest := addJSON(t, n, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: []ocispec.Descriptor{layer},
	})
	rootData, _ := json.Marshal(manifest)
	root, err := n.Add(context.Background(), bytes.NewReader(rootData))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + host + "/v2/ipfs/" + root.String() + "/blobs/" + layer.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err == nil {
		t.Fatalf("a blob that does not match its digest was served whole (%d bytes)", len(got))
	}
}
