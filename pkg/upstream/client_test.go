package upstream_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// fakeRegistry serves one manifest and one blob per repository, behind
// Docker Hub's token flow (bearer) or distribution's htpasswd (basic).
// Repositories named private/* need alice:s3cret.
type fakeRegistry struct {
	srv      *httptest.Server
	manifest []byte
	blob     []byte
	tokens   atomic.Int32
	// ignoreRange serves whole blobs whatever the Range.
	ignoreRange bool
	// redirect sends blobs to another server.
	redirect *httptest.Server
}

func newFakeRegistry(t *testing.T, scheme string) *fakeRegistry {
	f := &fakeRegistry{
		manifest: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`),
		blob:     []byte(strings.Repeat("shoal ", 1000)),
	}
	good := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		f.tokens.Add(1)
		scope := r.URL.Query().Get("scope")
		tok := "anonymous"
		if r.Header.Get("Authorization") == "Basic "+good {
			tok = "alice"
		} else if r.Header.Get("Authorization") != "" {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"token": tok + "|" + scope, "expires_in": 300})
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		repo, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
		repo2, rest2, _ := strings.Cut(rest, "/")
		repo, rest = repo+"/"+repo2, rest2
		private := strings.HasPrefix(repo, "private/")
		authz := r.Header.Get("Authorization")
		allowed := !private
		switch scheme {
		case "bearer":
			allowed = authz == "Bearer alice|repository:"+repo+":pull" || (!private && authz == "Bearer anonymous|repository:"+repo+":pull")
			if !allowed {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake",scope="repository:%s:pull"`, f.srv.URL, repo))
			}
		case "basic":
			allowed = authz == "Basic "+good
			if !allowed {
				w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			}
		}
		if !allowed {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		kind, ref, _ := strings.Cut(rest, "/")
		switch {
		case repo == "library/missing/x" || strings.HasPrefix(repo, "missing/"):
			http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
		case repo == "broken/app":
			http.Error(w, "boom", http.StatusInternalServerError)
		case kind == "manifests":
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(f.manifest).String())
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(f.manifest)))
		case kind == "blobs" && ref == digest.FromBytes(f.blob).String():
			if f.redirect != nil && r.Host != strings.TrimPrefix(f.redirect.URL, "http://") {
				http.Redirect(w, r, f.redirect.URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			if f.ignoreRange {
				r.Header.Del("Range")
			}
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(f.blob)))
		default:
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func client(f *fakeRegistry) *upstream.Client {
	return upstream.New(upstream.Endpoint{Registry: "fake.example", URL: f.srv.URL})
}

func basicAuth(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

func TestResolveAndManifestWithBearerTokens(t *testing.T) {
	f := newFakeRegistry(t, "bearer")
	c := client(f)
	ctx := context.Background()
	want := digest.FromBytes(f.manifest)
	d, err := c.Resolve(ctx, "library/debian", "12", "")
	if err != nil || d.Digest != want || d.MediaType != ocispec.MediaTypeImageManifest || d.Size != int64(len(f.manifest)) {
		t.Fatalf("Resolve: %+v %v", d, err)
	}
	data, d, err := c.Manifest(ctx, "library/debian", want.String(), "")
	if err != nil || string(data) != string(f.manifest) || d.Digest != want {
		t.Fatalf("Manifest by digest: %+v %v", d, err)
	}
	if n := f.tokens.Load(); n != 1 {
		t.Fatalf("%d token requests for one repository, want 1 (cached)", n)
	}
	// Private: anonymous is refused, alice is let in, a wrong password is not.
	if _, err := c.Resolve(ctx, "private/app", "1", ""); !errdefs.IsUnauthorized(err) {
		t.Fatalf("anonymous on a private repository: %v", err)
	}
	// A check's HEAD says what the manifest is, as a resolve's does.
	checked, err := c.Check(ctx, "private/app", "1", basicAuth("alice", "s3cret"))
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	if resolved, err := c.Resolve(ctx, "private/app", "1", basicAuth("alice", "s3cret")); err != nil || checked.Digest == "" || checked.Digest != resolved.Digest || checked.Size != resolved.Size || checked.MediaType != resolved.MediaType {
		t.Fatalf("alice's check says %+v, her resolve %+v (%v)", checked, resolved, err)
	}
	if _, err := c.Check(ctx, "private/app", "1", basicAuth("alice", "guess")); err == nil || errdefs.IsNotFound(err) {
		t.Fatalf("a wrong password: %v", err)
	}
	// A wrong manifest digest is refused.
	if _, _, err := c.Manifest(ctx, "library/debian", digest.FromString("other").String(), ""); !errdefs.IsDataLoss(err) {
		t.Fatalf("bytes that do not match the digest asked for: %v", err)
	}
}

func TestBasicAuthAndConfiguredCredentials(t *testing.T) {
	f := newFakeRegistry(t, "basic")
	ctx := context.Background()
	c := client(f)
	if _, err := c.Check(ctx, "team/app", "1", ""); !errdefs.IsUnauthorized(err) {
		t.Fatalf("anonymous: %v", err)
	}
	if _, err := c.Check(ctx, "team/app", "1", basicAuth("alice", "s3cret")); err != nil {
		t.Fatalf("forwarded credentials: %v", err)
	}
	configured := upstream.New(upstream.Endpoint{Registry: "fake.example", URL: f.srv.URL, Username: "alice", Password: "s3cret"})
	if _, err := configured.Resolve(ctx, "team/app", "1", ""); err != nil {
		t.Fatalf("configured credentials: %v", err)
	}
}

func TestBlobFromAnOffset(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		f := newFakeRegistry(t, "none")
		f.ignoreRange = ignore
		rc, size, err := client(f).Blob(context.Background(), "library/debian", digest.FromBytes(f.blob), 100, "")
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || size != int64(len(f.blob)) || string(data) != string(f.blob[100:]) {
			t.Fatalf("ignoreRange=%v: size %d, %d bytes, %v", ignore, size, len(data), err)
		}
	}
}

func TestBlobRedirectKeepsCredentialsHome(t *testing.T) {
	f := newFakeRegistry(t, "none")
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		w.Write(f.blob)
	}))
	defer other.Close()
	f.redirect = other
	rc, _, err := client(f).Blob(context.Background(), "library/debian", digest.FromBytes(f.blob), 0, basicAuth("alice", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if string(data) != string(f.blob) || leaked.Load() {
		t.Fatalf("redirected blob: %d bytes, credentials sent elsewhere: %v", len(data), leaked.Load())
	}
}

func TestErrorKinds(t *testing.T) {
	f := newFakeRegistry(t, "none")
	c := client(f)
	ctx := context.Background()
	if _, err := c.Resolve(ctx, "missing/app", "1", ""); !errdefs.IsNotFound(err) {
		t.Fatalf("404: %v", err)
	}
	if _, err := c.Resolve(ctx, "broken/app", "1", ""); !errdefs.IsUnavailable(err) {
		t.Fatalf("500: %v", err)
	}
	down := upstream.New(upstream.Endpoint{Registry: "down.example", URL: "http://127.0.0.1:1"})
	if _, err := down.Resolve(ctx, "library/debian", "12", ""); !errdefs.IsUnavailable(err) {
		t.Fatalf("connection refused: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Resolve(cancelled, "library/debian", "12", ""); err == nil || errdefs.IsUnavailable(err) {
		t.Fatalf("the caller's own cancellation is no outage: %v", err)
	}
}

func TestParseMirror(t *testing.T) {
	for spec, want := range map[string]string{
		"docker.io":                            "https://registry-1.docker.io",
		"ghcr.io":                              "https://ghcr.io",
		"127.0.0.1:5000=http://127.0.0.1:5000": "http://127.0.0.1:5000",
		"r.example=https://mirror.example/":    "https://mirror.example",
	} {
		ep, err := upstream.ParseMirror(spec)
		if err != nil || ep.BaseURL() != want {
			t.Errorf("%s: %+v %v, want %s", spec, ep, err, want)
		}
	}
	for _, bad := range []string{"", "a/b", "x=ftp://y", "*=http://y", "x=http://h/path", "x=http://u:p@h"} {
		if _, err := upstream.ParseMirror(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	any := upstream.Endpoint{Registry: "*", Username: "u", Password: "p"}
	if got := any.ForRegistry("quay.io"); got.BaseURL() != "https://quay.io" || got.Password != "" {
		t.Errorf("* for quay.io: %+v", got)
	}
}
