package kubo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/registry"
)

// The client stands in for the embedded node everywhere shoal uses one.
var (
	_ api.API        = (*Client)(nil)
	_ registry.Store = (*Client)(nil)
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct{ in, network, dial, scheme string }{
		{"/ip4/127.0.0.1/tcp/5001", "tcp4", "127.0.0.1:5001", "http"},
		{" /ip4/127.0.0.1/tcp/5001\n", "tcp4", "127.0.0.1:5001", "http"},
		{"/ip6/::1/tcp/5001/http", "tcp6", "[::1]:5001", "http"},
		{"/dns4/localhost/tcp/5001", "tcp4", "localhost:5001", "http"},
		{"/ip4/10.0.0.1/tcp/443/tls/http", "tcp4", "10.0.0.1:443", "https"},
		{"/ip4/10.0.0.1/tcp/443/https", "tcp4", "10.0.0.1:443", "https"},
		{"/unix/run/ipfs/api.sock", "unix", "/run/ipfs/api.sock", "http"},
	} {
		a, err := ParseAddress(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if a.network != tc.network || a.dial != tc.dial || a.scheme != tc.scheme {
			t.Errorf("%q: %s %s %s, want %s %s %s", tc.in, a.network, a.dial, a.scheme, tc.network, tc.dial, tc.scheme)
		}
	}
	for _, bad := range []string{"", "bogus", "127.0.0.1:5001", "/ip4/127.0.0.1", "/ip4/127.0.0.1/udp/5001/quic-v1", "/http"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("%q: parsed", bad)
		} else if !strings.Contains(err.Error(), "kubo API address") {
			t.Errorf("%q: %v does not say what it is", bad, err)
		}
	}
}

func TestResolveAddressReadsTheAPIFile(t *testing.T) {
	repo := t.TempDir()
	t.Setenv("IPFS_PATH", repo)
	_, err := ResolveAddress(Auto)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(repo, "api")) || !strings.Contains(err.Error(), "ipfs daemon") {
		t.Fatalf("without an api file: %v, want the path and what to do", err)
	}
	if err := os.WriteFile(filepath.Join(repo, "api"), []byte("/ip4/127.0.0.1/tcp/45001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{Auto, ""} {
		a, err := ResolveAddress(v)
		if err != nil || a.dial != "127.0.0.1:45001" || a.From != filepath.Join(repo, "api") {
			t.Fatalf("%q: %+v %v", v, a, err)
		}
	}
	if a, err := ResolveAddress("/ip4/127.0.0.1/tcp/1"); err != nil || a.dial != "127.0.0.1:1" || a.From != "" {
		t.Fatalf("a given address: %+v %v", a, err)
	}
	if err := os.WriteFile(filepath.Join(repo, "api"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveAddress(Auto); err == nil || !strings.Contains(err.Error(), filepath.Join(repo, "api")) {
		t.Fatalf("a bad api file: %v, want its path", err)
	}
}

func TestUnreachableAPISaysWhereAndWhatToDo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr, err := ParseAddress(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), addr, blob.Kubo)
	if err == nil || !strings.Contains(err.Error(), addr.Multiaddr) || !strings.Contains(err.Error(), "ipfs daemon") {
		t.Fatalf("dial a closed port: %v", err)
	}
}

// fakeKubo answers version and whatever handlers say; every request must
// be a POST, as kubo's RPC API demands.
func fakeKubo(t *testing.T, handlers map[string]http.HandlerFunc) *Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v0/version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"Version":"0.43.1"}`)
	})
	for cmd, h := range handlers {
		mux.HandleFunc("/api/v0/"+cmd, h)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "405 - Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr, err := ParseAddress("/ip4/127.0.0.1/tcp/" + srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(context.Background(), addr, blob.Kubo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kuboError writes an error as kubo does.
func kuboError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `{"Message":%q,"Code":0,"Type":"error"}`, msg)
}

var someCID = cid.MustParse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")

func TestKuboErrorsCarryItsMessage(t *testing.T) {
	c := fakeKubo(t, map[string]http.HandlerFunc{
		"cat":        func(w http.ResponseWriter, _ *http.Request) { kuboError(w, "block was not found locally (offline)") },
		"files/read": func(w http.ResponseWriter, _ *http.Request) { kuboError(w, "file does not exist") },
		"pin/ls":     func(w http.ResponseWriter, _ *http.Request) {},
		"pin/add":    func(w http.ResponseWriter, _ *http.Request) { kuboError(w, "pin: context canceled") },
	})
	ctx := context.Background()
	_, err := c.Cat(ctx, someCID)
	var ke *Error
	if !errors.As(err, &ke) || ke.Command != "cat" || ke.Message != "block was not found locally (offline)" {
		t.Fatalf("cat: %v", err)
	}
	if _, err := c.ReadBlobAt(ctx, someCID, make([]byte, 10), 0); !errors.As(err, &ke) || ke.Command != "cat" {
		t.Fatalf("read: %v", err)
	}
	if _, err := c.Image(ctx, someCID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("image without a record: %v, want errdefs.ErrNotFound", err)
	}
	if err := c.RemoveImage(ctx, someCID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("remove an unknown image: %v, want errdefs.ErrNotFound", err)
	}
	err = c.PinImage(ctx, catalog.Image{CID: someCID.String(), Blobs: []string{someCID.String()}})
	if !errors.As(err, &ke) || !strings.Contains(err.Error(), someCID.String()) || !strings.Contains(err.Error(), "pin: context canceled") {
		t.Fatalf("pin image: %v, want the image and kubo's message", err)
	}
	if err := c.Hold(ctx, ""); err == nil {
		t.Fatal("a hold without a name")
	}
}

// A failure after the output began arrives in kubo's X-Stream-Error
// trailer: the read ends with it, not with a clean EOF.
func TestAnErrorAfterTheOutputBeganIsAnError(t *testing.T) {
	c := fakeKubo(t, map[string]http.HandlerFunc{
		"cat": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Trailer", "X-Stream-Error")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("the first bytes"))
			w.(http.Flusher).Flush()
			w.Header().Set("X-Stream-Error", "context deadline exceeded")
		},
	})
	rc, err := c.Cat(context.Background(), someCID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	var ke *Error
	if string(data) != "the first bytes" || !errors.As(err, &ke) || ke.Message != "context deadline exceeded" {
		t.Fatalf("read %q, %v", data, err)
	}
	if n, err := c.ReadBlobAt(context.Background(), someCID, make([]byte, 100), 0); !errors.As(err, &ke) {
		t.Fatalf("ReadBlobAt: %d, %v, want kubo's error", n, err)
	}
}

func TestNotTheRPCAPI(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler()) // a gateway, say
	defer srv.Close()
	addr, err := ParseAddress("/ip4/127.0.0.1/tcp/" + srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), addr, blob.Kubo)
	if err == nil || !strings.Contains(err.Error(), "RPC API") {
		t.Fatalf("a server that is not kubo's API: %v", err)
	}
}

// Add asks kubo for the layout's parameters, every one of them, and
// passes on what went wrong with the reader rather than its consequence.
func TestAddAsksForTheLayout(t *testing.T) {
	var got map[string][]string
	c := fakeKubo(t, map[string]http.HandlerFunc{
		"add": func(w http.ResponseWriter, r *http.Request) {
			got = r.URL.Query()
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				kuboError(w, err.Error())
				return
			}
			fmt.Fprintf(w, `{"Name":"blob","Hash":%q,"Size":"0"}`+"\n", someCID)
		},
	})
	c.layout = blob.V1_2025
	if c2, err := c.Add(context.Background(), strings.NewReader("")); err != nil || c2 != someCID {
		t.Fatalf("add: %s %v", c2, err)
	}
	for k, v := range map[string]string{"cid-version": "1", "raw-leaves": "true", "hash": "sha2-256", "chunker": "size-1048576", "max-file-links": "1024", "trickle": "false", "pin": "false"} {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("add %s=%v, want %s", k, got[k], v)
		}
	}
	bad := errors.New("digest mismatch")
	if _, err := c.Add(context.Background(), io.MultiReader(strings.NewReader("abc"), errReader{bad})); !errors.Is(err, bad) {
		t.Fatalf("add from a failing reader: %v, want its error", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestHoldFilesRoundTrip(t *testing.T) {
	for _, name := range []string{"registry/team app/blob/sha256:abc", "a", "x%2Fy", "ünï/cödé"} {
		f := holdFile(name)
		if strings.Contains(f, "/") {
			t.Errorf("%q: file %q has a slash", name, f)
		}
		if got, ok := holdName(f); !ok || got != name {
			t.Errorf("%q: back %q %v", name, got, ok)
		}
	}
	if _, ok := holdName("x.txt"); ok {
		t.Error("x.txt is a hold")
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"/ip4/127.0.0.1/tcp/5001", "/unix/a/b", "/ip6/::1/tcp/1/tls/http", "/dns/x/tcp/1/https", "/http", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		if a.dial == "" || (a.network != "unix" && !strings.HasPrefix(a.network, "tcp")) || (a.scheme != "http" && a.scheme != "https") {
			t.Fatalf("%q: %+v", s, a)
		}
	})
}

func FuzzHoldFile(f *testing.F) {
	for _, s := range []string{"registry/a/blob/sha256:00", "a.json", "%zz", "x/y.json"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if name, ok := holdName(s); ok && holdFile(name) != s {
			t.Fatalf("file %q is hold %q, whose file is %q", s, name, holdFile(name))
		}
		if s == "" {
			return
		}
		f := holdFile(s)
		if name, ok := holdName(f); strings.Contains(f, "/") || !ok || name != s {
			t.Fatalf("hold %q: file %q, back %q %v", s, f, name, ok)
		}
	})
}
