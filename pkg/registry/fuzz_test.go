package registry

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
)

// FuzzRequest sends arbitrary requests to a registry: every one gets a
// response, and every error response is the spec's JSON body.
func FuzzRequest(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"GET", "/v2/", ""},
		{"GET", "/v2/a/b/manifests/latest", ""},
		{"PUT", "/v2/a/manifests/v1", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`},
		{"POST", "/v2/a/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "hello"},
		{"POST", "/v2/a/blobs/uploads/?mount=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824&from=b", ""},
		{"GET", "/v2/a/tags/list?n=1&last=a", ""},
		{"GET", "/v2/a/referrers/sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824?artifactType=x", ""},
		{"GET", "/v2/ipfs/bafkqaaa/blobs/sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", ""},
		{"DELETE", "/v2/a/blobs/uploads/0123456789abcdef0123456789abcdef", ""},
	} {
		f.Add(s.method, s.path, s.body)
	}
	rg, err := New(memstore.New(), dssync.MutexWrap(ds.NewMapDatastore()), f.TempDir(), WithFetchTimeout(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, "http://registry"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w := httptest.NewRecorder()
		rg.ServeHTTP(w, req)
		if w.Code >= 400 && method != http.MethodHead && !bytes.HasPrefix(w.Body.Bytes(), []byte(`{"errors":[`)) {
			t.Fatalf("%s %q: %d with body %q", method, path, w.Code, w.Body.Bytes())
		}
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, path, w.Code, w.Body.Bytes())
		}
	})
}

// FuzzParseManifest: any bytes are a manifest or MANIFEST_INVALID.
func FuzzParseManifest(f *testing.F) {
	f.Add("application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5},"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5,"urls":["https://x"]}]}`))
	f.Add("", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"subject":{"mediaType":"a","digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5}}`))
	f.Fuzz(func(t *testing.T, contentType string, data []byte) {
		mt, fields, err := parseManifest(contentType, data)
		if err != nil {
			if ae, ok := err.(*apiError); !ok || ae.Code != "MANIFEST_INVALID" {
				t.Fatalf("error %v is not MANIFEST_INVALID", err)
			}
			return
		}
		if mt == "" {
			t.Fatal("accepted without a media type")
		}
		for _, d := range fields.requiredBlobs() {
			if d.Digest.Validate() != nil {
				t.Fatalf("required blob with digest %q", d.Digest)
			}
		}
	})
}

// FuzzParseRange: every range accepted is a non-empty run of the blob,
// 0 <= start < end <= size, and no header means the whole blob.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-", "bytes=-5", "bytes=3-2", "bytes=1-1000", "bytes=9223372036854775807-",
		"bytes=0-9223372036854775807", "bytes=1-9223372036854775807", "bytes=-9223372036854775807", "0-5", "bytes 0-5/*"} {
		f.Add(s, int64(100))
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, s string, size int64) {
		if size < 0 {
			return
		}
		start, end, partial, err := parseRange(s, size)
		switch {
		case err != nil:
		case !partial && (start != 0 || end != size):
			t.Fatalf("range %q of %d: whole blob as [%d, %d)", s, size, start, end)
		case partial && !(0 <= start && start < end && end <= size):
			t.Fatalf("range %q of %d: [%d, %d)", s, size, start, end)
		}
		if a, b, ok := parseContentRange(s); ok && (a < 0 || b < a) {
			t.Fatalf("Content-Range %q: %d-%d", s, a, b)
		}
	})
}
