package mirror_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
)

// badPeer speaks the mirror protocol as a peer that is fetching every
// blob, and serves what serve writes.
func badPeer(t *testing.T, to *mirrorNode, size int, serve func(s network.Stream, d digest.Digest, offset int64)) host.Host {
	t.Helper()
	return fetchingPeer(t, to, size, nil, serve)
}

// fetchingPeer is a badPeer whose downloads come through the peers of via.
func fetchingPeer(t *testing.T, to *mirrorNode, size int, via []peer.ID, serve func(s network.Stream, d digest.Digest, offset int64)) host.Host {
	t.Helper()
	path, _ := json.Marshal(via)
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	h.SetStreamHandler(mirror.Protocol, func(s network.Stream) {
		defer s.Close()
		line, err := bufio.NewReader(s).ReadBytes('\n')
		if err != nil {
			return
		}
		var req struct {
			Op     string
			Digest digest.Digest
			Offset int64
		}
		_ = json.Unmarshal(line, &req)
		switch req.Op {
		case "has":
			fmt.Fprintf(s, `{"mirrors":true,"state":"fetching","size":%d,"path":%s}`+"\n", size, path)
		case "get":
			fmt.Fprintf(s, `{"state":"fetching","size":%d}`+"\n", size)
			serve(s, req.Digest, req.Offset)
		}
	})
	if err := to.n.Host().Connect(context.Background(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return h
}

// layerOf pushes an image of one layer to o and returns the layer's
// digest and bytes.
func layerOf(t *testing.T, o *origin, repoTag string) (digest.Digest, []byte) {
	t.Helper()
	img := testImage(t, 7, 3<<20)
	o.push(t, repoTag, img)
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(data), data
}

// heldStore is a store whose Hold waits until release is closed, as a
// busy disk's pin and sync can.
type heldStore struct {
	mirror.Store
	release chan struct{}
}

func (s heldStore) Hold(ctx context.Context, name string, blobs ...cid.Cid) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Hold(ctx, name, blobs...)
}

// slowStore is a store whose Add waits until release is closed before it
// reads anything, as an adder that lags behind a busy disk does.
type slowStore struct {
	mirror.Store
	release chan struct{}
}

func (s slowStore) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return cid.Undef, ctx.Err()
	}
	return s.Store.Add(ctx, r)
}

// A blob's last byte goes out as soon as the bytes match the digest, not
// once the store has them: down a chain of peers every node would wait for
// its own disk in turn. The blob is kept all the same.
func TestMirrorServesABlobBeforeTheStoreHasIt(t *testing.T) {
	o := newOrigin(t)
	layer, whole := layerOf(t, o, "library/app:v1")
	release := make(chan struct{})
	a := newMirrorNodeOver(t, o, nil, func(s mirror.Store) mirror.Store { return slowStore{s, release} }, func(*mirror.Options) {})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(a.srv.URL + "/v2/library/app/blobs/" + layer.String() + "?ns=" + o.host)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || !bytes.Equal(data, whole)) {
			err = fmt.Errorf("%s: %d bytes, not the blob", resp.Status, len(data))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the blob's last byte waited for the store")
	}
	open()
	o.setDown(true)
	waitStored(t, a, mirror.Ref{Registry: o.host, Repo: "library/app"}, layer)
}

// A blob's last bytes, and a manifest, go out once they match their
// digest, not once the record that keeps them is made: a chain of peers
// would otherwise wait for every node's disk in turn, and every node of a
// rollout would wait for it before asking for the image's blobs.
func TestMirrorServesBeforeTheRecordIsKept(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"blob", "/v2/library/app/blobs/"},
		{"manifest", "/v2/library/app/manifests/v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t)
			layer, _ := layerOf(t, o, "library/app:v1")
			path := tc.path
			if tc.name == "blob" {
				path += layer.String()
			}
			release := make(chan struct{})
			var spool string
			a := newMirrorNodeOver(t, o, nil, func(s mirror.Store) mirror.Store { return heldStore{s, release} }, func(o *mirror.Options) { spool = o.Spool })
			var once sync.Once
			open := func() { once.Do(func() { close(release) }) }
			t.Cleanup(open) // before the mirror closes, which waits for the record
			type served struct {
				d   digest.Digest
				err error
			}
			done := make(chan served, 1)
			go func() {
				resp, err := http.Get(a.srv.URL + path + "?ns=" + o.host)
				if err != nil {
					done <- served{err: err}
					return
				}
				defer resp.Body.Close()
				data, err := io.ReadAll(resp.Body)
				d := digest.FromBytes(data)
				if err == nil && (resp.StatusCode != http.StatusOK || d.String() != resp.Header.Get("Docker-Content-Digest")) {
					err = fmt.Errorf("%s: %d bytes that are not %s", resp.Status, len(data), resp.Header.Get("Docker-Content-Digest"))
				}
				done <- served{d, err}
			}()
			var got served
			select {
			case got = <-done:
				if got.err != nil {
					t.Fatal(got.err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("the %s waited for its record", tc.name)
			}
			if tc.name == "blob" {
				// Its readers done, the spool goes, before the record.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					if left, err := os.ReadDir(spool); err == nil && len(left) == 0 {
						break
					} else if time.Now().After(deadline) {
						t.Fatalf("the spool still holds %v while the record waits (%v)", left, err)
					}
				}
			}
			open()
			// And it is kept: with the upstream gone, it is served from here.
			o.setDown(true)
			ref := mirror.Ref{Registry: o.host, Repo: "library/app"}
			if tc.name == "blob" {
				waitStored(t, a, ref, got.d)
			} else {
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					_, _, err := a.m.Manifest(context.Background(), ref, got.d.String())
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the manifest was not kept once its hold could be made: %v", err)
					}
				}
			}
			if n := o.blobGets()[layer.String()]; tc.name == "blob" && n != 1 {
				t.Fatalf("the upstream sent the blob %d times, want 1", n)
			}
		})
	}
}

// waitStored waits until mn holds blob d of r in its store, recorded.
func waitStored(t *testing.T, mn *mirrorNode, r mirror.Ref, d digest.Digest) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := mn.m.Blob(context.Background(), r, d)
		if err == nil && b.Open == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s is not stored and recorded (%v)", d, err)
		}
	}
}

// A peer that sends bytes that do not match the digest: the response is
// cut off, nothing is kept, and the next request, which leaves that peer
// out, gets the blob from the upstream.
func TestMirrorCutsOffAPeersWrongBytes(t *testing.T) {
	o := newOrigin(t)
	d, whole := layerOf(t, o, "library/app:v1")
	a := newMirrorNode(t, o, time.Minute)
	badPeer(t, a, len(whole), func(s network.Stream, _ digest.Digest, offset int64) {
		_, _ = s.Write(make([]byte, int64(len(whole))-offset))
	})
	resp, err := http.Get(a.srv.URL + "/v2/library/app/blobs/" + d.String() + "?ns=" + o.host)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatalf("a blob of wrong bytes was served whole")
	}
	if got := o.blobGets()[d.String()]; got != 0 {
		t.Fatalf("the upstream was asked %d times while a peer said it was fetching", got)
	}
	data, resp := a.get(t, o.host, "/v2/library/app/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || digest.FromBytes(data) != d {
		t.Fatalf("after the liar: %s, %d bytes", resp.Status, len(data))
	}
}

// A peer that stops sending halfway: the download goes on from the byte
// reached with the upstream, within the stall timeout, and the client
// gets the whole blob in one response.
func TestMirrorReplacesAStalledPeer(t *testing.T) {
	o := newOrigin(t)
	d, whole := layerOf(t, o, "library/app:v1")
	a := newMirrorNode(t, o, time.Minute)
	// The good first half, then nothing.
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	badPeer(t, a, len(whole), func(s network.Stream, _ digest.Digest, offset int64) {
		_, _ = s.Write(whole[offset : len(whole)/2])
		<-stalled
	})
	start := time.Now()
	data, resp := a.get(t, o.host, "/v2/library/app/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || digest.FromBytes(data) != d {
		t.Fatalf("with a stalled peer: %s, %d bytes", resp.Status, len(data))
	}
	took := time.Since(start)
	if took < mirror.DefaultStallTimeout {
		t.Fatalf("took %s: the peer was not the first source", took)
	}
	t.Logf("served in %s with a peer stalled halfway", took)
}

// A peer whose download comes through this node is not read from: the
// bytes would go round in a circle until the stall timeout sent both
// nodes to the upstream, one copy each.
func TestMirrorDoesNotReadFromAPeerThatReadsFromIt(t *testing.T) {
	o := newOrigin(t)
	d, whole := layerOf(t, o, "library/app:v1")
	a := newMirrorNode(t, o, time.Minute)
	asked := make(chan struct{}, 1)
	fetchingPeer(t, a, len(whole), []peer.ID{a.n.Host().ID()}, func(network.Stream, digest.Digest, int64) {
		asked <- struct{}{}
	})
	start := time.Now()
	data, resp := a.get(t, o.host, "/v2/library/app/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || digest.FromBytes(data) != d {
		t.Fatalf("%s, %d bytes", resp.Status, len(data))
	}
	select {
	case <-asked:
		t.Fatalf("read from a peer whose download comes through this node (took %s)", time.Since(start))
	default:
	}
	if got := o.blobGets()[d.String()]; got != 1 {
		t.Fatalf("the upstream was asked %d times, want once", got)
	}
}

// A peer that asks for a blob that this node reads from it is told to
// read it from elsewhere at once, rather than joining a circle.
func TestMirrorRefusesAReaderItReadsFrom(t *testing.T) {
	o := newOrigin(t)
	d, whole := layerOf(t, o, "library/app:v1")
	a := newMirrorNode(t, o, time.Minute)
	answers := make(chan string, 1)
	var h host.Host
	h = badPeer(t, a, len(whole), func(s network.Stream, d digest.Digest, offset int64) {
		// While a reads from this peer, this peer asks a for the blob.
		back, err := h.NewStream(context.Background(), a.n.Host().ID(), mirror.Protocol)
		if err != nil {
			answers <- err.Error()
			return
		}
		defer back.Reset()
		fmt.Fprintf(back, `{"op":"get","registry":%q,"repo":"library/app","digest":%q,"fetch":true}`+"\n", o.host, d)
		line, _ := bufio.NewReader(back).ReadString('\n')
		answers <- line
		_, _ = s.Write(whole[offset:])
	})
	data, resp := a.get(t, o.host, "/v2/library/app/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || digest.FromBytes(data) != d {
		t.Fatalf("%s, %d bytes", resp.Status, len(data))
	}
	var answer struct{ Error string }
	if err := json.Unmarshal([]byte(<-answers), &answer); err != nil || answer.Error == "" {
		t.Fatalf("a peer that a reads from was served a's download of its own bytes: %v %+v", err, answer)
	}
	if got := o.blobGets()[d.String()]; got != 0 {
		t.Fatalf("the upstream was asked %d times, want none", got)
	}
}

// TestMirrorHolderSendsASecondReaderOnToTheFirst: a node that holds a
// blob whole serves one peer at a time and sends the next on to that
// reader, so that a second rollout chains as a first one does; a reader
// that must stay is served all the same.
func TestMirrorHolderSendsASecondReaderOnToTheFirst(t *testing.T) {
	o := newOrigin(t)
	d, whole := layerOf(t, o, "library/app:v1")
	a := newMirrorNode(t, o, time.Minute)
	if data, resp := a.get(t, o.host, "/v2/library/app/blobs/"+d.String()); resp.StatusCode != http.StatusOK || len(data) != len(whole) {
		t.Fatalf("a's pull: %s", resp.Status)
	}
	// a holds it once its record is made, a moment after the last bytes
	// went out; until then a reader is one of its download's.
	waitStored(t, a, mirror.Ref{Registry: o.host, Repo: "library/app"}, d)
	dial := func() (host.Host, network.Stream, *bufio.Reader) {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		if err := h.Connect(context.Background(), peer.AddrInfo{ID: a.n.Host().ID(), Addrs: a.n.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		s, err := h.NewStream(context.Background(), a.n.Host().ID(), mirror.Protocol)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Reset() })
		return h, s, bufio.NewReader(s)
	}
	get := func(s network.Stream, br *bufio.Reader, stay bool) (state string, redirect []peer.ID) {
		fmt.Fprintf(s, `{"op":"get","registry":%q,"repo":"library/app","digest":%q,"stay":%v}`+"\n", o.host, d, stay)
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			State    string
			Redirect []peer.ID
			Error    string
		}
		if err := json.Unmarshal(line, &ans); err != nil || ans.Error != "" {
			t.Fatalf("answer %q: %v", line, err)
		}
		return ans.State, ans.Redirect
	}
	first, s1, br1 := dial()
	if state, on := get(s1, br1, false); state != "stored" || len(on) != 0 {
		t.Fatalf("the first reader: state %q, sent on to %v; want the bytes", state, on)
	}
	// The first reader reads a little and holds its stream open.
	if _, err := io.ReadFull(br1, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	_, s2, br2 := dial()
	if state, on := get(s2, br2, false); len(on) != 1 || on[0] != first.ID() {
		t.Fatalf("the second reader: state %q, sent on to %v; want the first reader %s", state, on, first.ID())
	}
	_, s3, br3 := dial()
	if state, on := get(s3, br3, true); state != "stored" || len(on) != 0 {
		t.Fatalf("a reader that must stay: state %q, sent on to %v", state, on)
	}
	rest, err := io.ReadAll(br3)
	if err != nil || digest.FromBytes(rest) != d {
		t.Fatalf("the reader that stayed got %d bytes (%v), not the blob", len(rest), err)
	}
}
