package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/store/storetest"
)

// serve starts a daemon on a socket in a temporary directory and returns a
// client of it; the daemon stops when the test ends.
func serve(t *testing.T) (*node.Node, *Client) {
	t.Helper()
	home := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Swarm.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Swarm.MDNS = false
	if _, err := config.Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(context.Background(), home, node.Options{Online: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	socket := filepath.Join(home, "test.sock")
	done := make(chan error, 1)
	go func() { done <- NewServer(n, ServerOptions{}).Serve(ctx, socket) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		n.Close()
	})
	var c *Client
	deadline := time.Now().Add(5 * time.Second)
	for c == nil {
		c, err = Dial(context.Background(), socket)
		if err != nil && time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { c.Close() })
	return n, c
}

func TestClientAndNodeAgree(t *testing.T) {
	ctx := context.Background()
	n, c := serve(t)
	data := bytes.Repeat([]byte("shoal"), 200_000)
	viaDaemon, err := c.Add(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	direct, err := n.Add(ctx, bytes.NewReader(data))
	if err != nil || direct != viaDaemon {
		t.Fatalf("daemon added %s, node %s (%v)", viaDaemon, direct, err)
	}
	rc, err := c.Cat(ctx, viaDaemon)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(back, data) {
		t.Fatal("cat through the daemon returned other bytes")
	}
	img := catalog.Image{CID: viaDaemon.String(), Source: "test", Blobs: []string{viaDaemon.String()}, Created: time.Now()}
	if err := c.PinImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	imgs, err := c.Images(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].CID != img.CID {
		t.Fatalf("images: %v %v", imgs, err)
	}
	id, err := c.ID(ctx)
	if err != nil || len(id.Addresses) == 0 {
		t.Fatalf("id: %+v %v", id, err)
	}
	if err := c.RemoveImage(ctx, viaDaemon); err != nil {
		t.Fatal(err)
	}
	res, err := c.GC(ctx)
	if err != nil || res.Blocks == 0 {
		t.Fatalf("gc: %+v %v", res, err)
	}
}

// TestAddChunksThroughTheDaemon: a blob added in chunks through the
// daemon gets the CID the node gives it; a body that does not match its
// sizes is refused.
func TestAddChunksThroughTheDaemon(t *testing.T) {
	ctx := context.Background()
	n, c := serve(t)
	chunks := [][]byte{[]byte("first window"), bytes.Repeat([]byte("w"), 40_000), []byte("last")}
	viaDaemon, err := c.AddChunks(ctx, blob.ChunkSlice(chunks))
	if err != nil {
		t.Fatal(err)
	}
	direct, err := n.AddChunks(ctx, blob.ChunkSlice(chunks))
	if err != nil || direct != viaDaemon {
		t.Fatalf("daemon added %s, node %s (%v)", viaDaemon, direct, err)
	}
	for _, bad := range []struct{ q, body string }{
		{"chunks=5,5", "\x05hello\x05world"},
		{"chunks=framed", "\x05hello\x09world"}, // a chunk cut short
		{"chunks=framed", "\x00"},               // an empty chunk
		{"chunks=framed", "\xff\xff\xff\x7f"},   // a chunk over the limit
	} {
		q, body := bad.q, bad.body
		resp, err := c.send(ctx, http.MethodPost, "/v0/add?"+q, strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s %q: accepted", q, body)
		} else if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s %q: %v, want invalid argument", q, body, err)
		}
	}
}

func TestErrorsKeepTheirKind(t *testing.T) {
	ctx := context.Background()
	_, c := serve(t)
	missing := cid.MustParse("bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4")
	if err := c.RemoveImage(ctx, missing); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("remove of an unknown image: %v, want ErrNotFound", err)
	}
	if _, err := c.Image(ctx, missing); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("image: %v, want ErrNotFound", err)
	}
	if err := c.PinImage(ctx, catalog.Image{CID: "nonsense"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("pin of an image with a bad CID: %v, want invalid argument", err)
	}
	if _, err := c.Shard(ctx, missing, 2); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "no group") {
		t.Fatalf("shard on a daemon in no group: %v, want failed precondition", err)
	}
	// Each kind crosses the socket with its words.
	for _, kind := range []error{errdefs.ErrUnavailable, errdefs.ErrDataLoss, context.DeadlineExceeded, errdefs.ErrAlreadyExists} {
		rec := httptest.NewRecorder()
		writeError(rec, fmt.Errorf("it went wrong: %w", kind))
		var eb errorBody
		if err := json.NewDecoder(rec.Body).Decode(&eb); err != nil || errkind.Parse(eb.Kind) != kind || eb.Message != "it went wrong: "+kind.Error() {
			t.Fatalf("%v sent as %d %+v", kind, rec.Code, eb)
		}
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect to nobody: %v", err)
	}
}

func TestDialWithoutDaemon(t *testing.T) {
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("dial of a missing socket: %v", err)
	}
}

// A client's mistake comes back as 400 with what was wrong, not the
// marker's text.
func TestBadRequestSaysWhatNotBadRequest(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, invalid("CID %q: no", "x"))
	if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), "bad request") || !strings.Contains(rec.Body.String(), `CID \"x\"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

// A daemon's client does what package store says a store does, for the
// roles it has.
func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		_, c := serve(t)
		return c
	})
}
