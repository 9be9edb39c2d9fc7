package retrieval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/packs"
)

// carServer answers trustless gateway requests (the IPFS HTTP gateway
// spec's verifiable responses) from the local blockstore alone:
// GET /ipfs/{cid}?format=raw for one block, and ?format=car for a DAG, in
// depth-first order without duplicates. It never fetches from other peers
// and never re-hashes what it serves: the client verifies every block, as
// the trustless protocol intends, so the server's CPU goes to moving bytes.
type carServer struct {
	bs blockstore.Blockstore
	// leaves, if set, streams leaves from their packs: a leaf served to a
	// peer is read straight into the response's buffer, never into a
	// buffer of its own.
	leaves interface{ Leaves() *packs.Leaves }
	// served counts the single blocks (format=raw) sent to peers.
	served *atomic.Uint64
}

const (
	mediaRaw = "application/vnd.ipld.raw"
	mediaCAR = "application/vnd.ipld.car"
)

func (s *carServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/ipfs/")
	if !ok || rest == "" || strings.Contains(strings.TrimSuffix(rest, "/"), "/") {
		http.Error(w, "want /ipfs/{cid}: this gateway serves whole blocks and DAGs, no paths", http.StatusBadRequest)
		return
	}
	c, err := cid.Decode(strings.TrimSuffix(rest, "/"))
	if err != nil {
		http.Error(w, fmt.Sprintf("invalid CID %q: %v", rest, err), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		accept := r.Header.Get("Accept")
		switch {
		case strings.Contains(accept, mediaCAR):
			format = "car"
		case strings.Contains(accept, mediaRaw):
			format = "raw"
		}
	}
	has, err := s.bs.Has(r.Context(), c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !has {
		http.Error(w, fmt.Sprintf("%s is not stored here", c), http.StatusNotFound)
		return
	}
	switch format {
	case "raw":
		s.serveRaw(w, r, c)
	case "car":
		scope := q.Get("dag-scope")
		if scope != "" && scope != "all" && scope != "block" && scope != "entity" {
			http.Error(w, fmt.Sprintf("dag-scope %q: want all, entity or block", scope), http.StatusBadRequest)
			return
		}
		if q.Get("entity-bytes") != "" {
			http.Error(w, "entity-bytes is not supported; ask for the whole DAG", http.StatusBadRequest)
			return
		}
		s.serveCAR(w, r, c, scope == "block")
	default:
		http.Error(w, "this is a trustless gateway: ask for format=raw or format=car", http.StatusNotAcceptable)
	}
}

func (s *carServer) serveRaw(w http.ResponseWriter, r *http.Request, c cid.Cid) {
	var (
		body io.Reader
		size int64
	)
	if s.leaves != nil {
		leaves := s.leaves.Leaves()
		defer leaves.Close()
		leaf, ok, err := leaves.Open(r.Context(), c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if ok {
			body, size = leaf, leaf.Size()
		}
	}
	if body == nil {
		b, err := s.bs.Get(r.Context(), c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		body, size = bytes.NewReader(b.RawData()), int64(len(b.RawData()))
	}
	w.Header().Set("Content-Type", mediaRaw)
	w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
	w.Header().Set("Etag", `"`+c.String()+`.raw"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, body); err == nil && s.served != nil {
		s.served.Add(1)
	}
}

func (s *carServer) serveCAR(w http.ResponseWriter, r *http.Request, root cid.Cid, onlyRoot bool) {
	w.Header().Set("Content-Type", mediaCAR+"; version=1; order=dfs; dups=n")
	w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	// Only a writer: bufio would hand a leaf's file to the response's
	// ReadFrom whenever its buffer is empty, which copies 32 KiB at a time.
	bw := bufio.NewWriterSize(struct{ io.Writer }{w}, 1<<20)
	if err := writeCARHeader(bw, root); err != nil {
		return
	}
	var leaves *packs.Leaves
	if s.leaves != nil {
		leaves = s.leaves.Leaves()
		defer leaves.Close()
	}
	// The DAG's inner nodes are read a few ahead of the network writes;
	// leaves are read as they are written.
	ctx, cancel := context.WithCancel(r.Context())
	ahead := make(chan carItem, 32)
	failed := make(chan struct{})
	go func() {
		defer close(ahead)
		if err := s.walk(ctx, root, onlyRoot, leaves != nil, ahead); err != nil && ctx.Err() == nil {
			close(failed)
		}
	}()
	defer func() {
		cancel()
		for range ahead { // let the reader finish before the handler returns
		}
	}()
	for it := range ahead {
		if err := s.writeItem(ctx, bw, leaves, it); err != nil {
			// The response has started; cutting it short is how a CAR
			// stream says it is incomplete.
			panic(http.ErrAbortHandler)
		}
	}
	select {
	case <-failed:
		panic(http.ErrAbortHandler)
	default:
	}
	_ = bw.Flush()
}

// carItem is a block of a CAR response: read already, or (b nil) a raw
// leaf to stream from its pack.
type carItem struct {
	c cid.Cid
	b blocks.Block
}

// writeItem writes one block of a CAR response.
func (s *carServer) writeItem(ctx context.Context, bw *bufio.Writer, leaves *packs.Leaves, it carItem) error {
	if it.b != nil {
		return writeCARBlock(bw, it.c, it.b.RawData())
	}
	leaf, ok, err := leaves.Open(ctx, it.c)
	if err != nil {
		return err
	}
	if !ok { // a loose raw block
		b, err := s.bs.Get(ctx, it.c)
		if err != nil {
			return err
		}
		return writeCARBlock(bw, it.c, b.RawData())
	}
	if err := writeCARSection(bw, it.c, leaf.Size()); err != nil {
		return err
	}
	n, err := io.Copy(bw, leaf)
	if err == nil && n != leaf.Size() {
		err = fmt.Errorf("leaf %s: %w: %d of %d bytes in its pack", it.c, io.ErrUnexpectedEOF, n, leaf.Size())
	}
	return err
}

// walk sends the blocks under root in depth-first order, each once; raw
// leaves unread if streamLeaves.
func (s *carServer) walk(ctx context.Context, root cid.Cid, onlyRoot, streamLeaves bool, out chan<- carItem) error {
	seen := map[string]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[string(c.Hash())] {
			continue
		}
		seen[string(c.Hash())] = true
		it := carItem{c: c}
		if !streamLeaves || c.Prefix().Codec != cid.Raw {
			b, err := s.bs.Get(ctx, c)
			if err != nil {
				return err
			}
			it.b = b
		}
		select {
		case out <- it:
		case <-ctx.Done():
			return ctx.Err()
		}
		if onlyRoot {
			return nil
		}
		if it.b == nil {
			continue // a raw leaf links nowhere
		}
		links, err := dagLinks(c, it.b.RawData())
		if err != nil {
			continue // a block of another codec ends its branch
		}
		for i := len(links) - 1; i >= 0; i-- {
			stack = append(stack, links[i])
		}
	}
	return nil
}

func dagLinks(c cid.Cid, data []byte) ([]cid.Cid, error) {
	b, err := blocks.NewBlockWithCid(data, c) // read from our own store: not re-hashed
	if err != nil {
		return nil, err
	}
	nd, err := blob.DecodeBlock(b)
	if err != nil {
		return nil, err
	}
	return linkCIDs(nd), nil
}

func linkCIDs(nd ipld.Node) []cid.Cid {
	ls := nd.Links()
	out := make([]cid.Cid, len(ls))
	for i, l := range ls {
		out[i] = l.Cid
	}
	return out
}

// writeCARHeader writes a CARv1 header naming one root: the DAG-CBOR map
// {"roots": [root], "version": 1}, length-prefixed.
func writeCARHeader(w *bufio.Writer, root cid.Cid) error {
	cb := append([]byte{0}, root.Bytes()...) // CIDs in DAG-CBOR: tag 42, bytes with a 0x00 prefix
	var h []byte
	h = append(h, 0xa2, 0x65)
	h = append(h, "roots"...)
	h = append(h, 0x81, 0xd8, 0x2a)
	h = appendCBORBytesHeader(h, len(cb))
	h = append(h, cb...)
	h = append(h, 0x67)
	h = append(h, "version"...)
	h = append(h, 0x01)
	if _, err := w.Write(binary.AppendUvarint(nil, uint64(len(h)))); err != nil {
		return err
	}
	_, err := w.Write(h)
	return err
}

func appendCBORBytesHeader(h []byte, n int) []byte {
	switch {
	case n < 24:
		return append(h, 0x40|byte(n))
	case n < 256:
		return append(h, 0x58, byte(n))
	default:
		return append(h, 0x59, byte(n>>8), byte(n))
	}
}

func writeCARBlock(w *bufio.Writer, c cid.Cid, data []byte) error {
	if err := writeCARSection(w, c, int64(len(data))); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// writeCARSection starts the CAR section of block c, of size bytes: its
// length and CID, the bytes to follow.
func writeCARSection(w *bufio.Writer, c cid.Cid, size int64) error {
	cb := c.Bytes()
	if _, err := w.Write(binary.AppendUvarint(nil, uint64(len(cb))+uint64(size))); err != nil {
		return err
	}
	_, err := w.Write(cb)
	return err
}
