package retrieval

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	carv2 "github.com/ipld/go-car/v2"
)

func TestCARServer(t *testing.T) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	blk := blocks.NewBlock([]byte("hello, trustless world"))
	if err := bs.Put(context.Background(), blk); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&carServer{bs: bs})
	defer srv.Close()
	get := func(path, accept string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	c := blk.Cid().String()
	for _, tc := range []struct {
		path, accept string
		status       int
	}{
		{"/ipfs/" + c, "", http.StatusNotAcceptable},
		{"/ipfs/" + c + "?format=html", "", http.StatusNotAcceptable},
		{"/ipfs/notacid?format=raw", "", http.StatusBadRequest},
		{"/ipfs/" + c + "/sub/path?format=raw", "", http.StatusBadRequest},
		{"/ipns/" + c + "?format=raw", "", http.StatusBadRequest},
		{"/ipfs/bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4?format=car", "", http.StatusNotFound},
		{"/ipfs/" + c + "?format=car&dag-scope=sideways", "", http.StatusBadRequest},
		{"/ipfs/" + c + "?format=car&entity-bytes=0:10", "", http.StatusBadRequest},
		{"/ipfs/" + c + "?format=raw", "", http.StatusOK},
		{"/ipfs/" + c, mediaRaw, http.StatusOK},
	} {
		resp, body := get(tc.path, tc.accept)
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s (Accept %q): %d, want %d (%s)", tc.path, tc.accept, resp.StatusCode, tc.status, body)
		}
		if tc.status == http.StatusOK && !bytes.Equal(body, blk.RawData()) {
			t.Errorf("GET %s: wrong bytes", tc.path)
		}
	}
	resp, body := get("/ipfs/"+c, carAccept)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CAR: %d %s", resp.StatusCode, body)
	}
	br, err := carv2.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || br.Roots[0] != blk.Cid() {
		t.Fatalf("CAR roots %v", br.Roots)
	}
	got, err := br.Next()
	if err != nil || !bytes.Equal(got.RawData(), blk.RawData()) {
		t.Fatalf("CAR block: %v", err)
	}
	if _, err := br.Next(); err != io.EOF {
		t.Fatalf("CAR has more than the one block: %v", err)
	}
}

func FuzzCARServerRequest(f *testing.F) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	blk := blocks.NewBlock([]byte("x"))
	_ = bs.Put(context.Background(), blk)
	s := &carServer{bs: bs}
	f.Add("/ipfs/"+blk.Cid().String(), "format=car&dag-scope=all", carAccept)
	f.Add("/ipfs/"+blk.Cid().String(), "format=raw", "")
	f.Add("/ipfs/../../etc", "", "*/*")
	f.Fuzz(func(t *testing.T, path, query, accept string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path, req.URL.RawQuery = path, query
		req.Header.Set("Accept", accept)
		w := httptest.NewRecorder()
		func() {
			defer func() {
				if r := recover(); r != nil && r != http.ErrAbortHandler {
					t.Fatalf("panic: %v", r)
				}
			}()
			s.ServeHTTP(w, req)
		}()
		if w.Code == http.StatusOK && !bytes.Contains(w.Body.Bytes(), []byte("x")) {
			t.Fatalf("200 without the block for %q?%q", path, query)
		}
	})
}

// A CAR response streams a blob's leaves from its pack; a pack a crash cut
// short cuts the response short too, so that the peer reading it sees an
// incomplete stream, never a whole one without the leaf.
func TestCARServerStreamsLeavesFromTheirPack(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*31 + i>>16)
	}
	a := newTestPeer(t)
	root := a.add(t, data)
	b := newTestPeer(t, a)
	b.mustCat(ctx, t, root, data) // b keeps the blob in a pack
	srv := httptest.NewServer(&carServer{bs: b.store.Unchecked(), leaves: b.store})
	defer srv.Close()
	get := func() ([]byte, error) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ipfs/"+root.String()+"?format=car", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}

	body, err := get()
	if err != nil {
		t.Fatal(err)
	}
	br, err := carv2.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var leaves []byte
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if sum, err := blk.Cid().Prefix().Sum(blk.RawData()); err != nil || !sum.Equals(blk.Cid()) {
			t.Fatalf("block %s does not match its CID", blk.Cid())
		}
		if blk.Cid().Prefix().Codec == cid.Raw {
			leaves = append(leaves, blk.RawData()...)
		}
	}
	if !bytes.Equal(leaves, data) {
		t.Fatalf("the CAR's leaves are %d bytes, not the blob's %d", len(leaves), len(data))
	}

	pack, size, ok, err := b.store.BlobFile(ctx, root)
	if err != nil || !ok {
		t.Fatalf("BlobFile: ok %v, err %v", ok, err)
	}
	if err := os.Chmod(pack, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pack, size/2); err != nil {
		t.Fatal(err)
	}
	if body, err := get(); err == nil {
		t.Fatalf("a CAR from a pack cut short ended cleanly after %d bytes", len(body))
	}
}
