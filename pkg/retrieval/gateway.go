package retrieval

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/containerd/errdefs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	libp2phttp "github.com/libp2p/go-libp2p/p2p/http"
	mh "github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/batch"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/internal/pagebuf"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/packs"
)

// GatewayProtocol is the libp2p protocol of the IPFS trustless HTTP gateway
// (kubo's Experimental.GatewayOverLibp2p). Over it a whole blob DAG comes as
// one CAR stream, far fewer round trips than bitswap's want lists; every
// block is still checked against its CID, and against its parent's links.
const GatewayProtocol = protocol.ID("/ipfs/gateway")

// carAccept asks for a CAR in depth-first order without duplicate blocks,
// the order in which each block can be checked against a parent's links.
const carAccept = "application/vnd.ipld.car; version=1; order=dfs; dups=n"

// ErrBadBlock is returned when a peer sends a block that does not hash to
// its CID or that no verified parent links to.
var ErrBadBlock = errkind.New("peer sent a block that does not verify", errdefs.ErrDataLoss)

// client is the HTTP client for p's gateway. Made once per peer, under a
// lock: libp2phttp's Host sets up its caches on first use without one.
func (rt *Retriever) client(p peer.ID) (http.Client, error) {
	rt.clientsMu.Lock()
	defer rt.clientsMu.Unlock()
	if c, ok := rt.clients[p]; ok {
		return c, nil
	}
	c, err := rt.http.NamespacedClient(GatewayProtocol, peer.AddrInfo{ID: p})
	if err != nil {
		return http.Client{}, err
	}
	if rt.clients == nil {
		rt.clients = map[peer.ID]http.Client{}
	}
	rt.clients[p] = c
	return c, nil
}

// startGateway serves this node's local blocks to peers over GatewayProtocol.
// Only blocks stored here are served: a request never makes this node fetch
// from others on a peer's behalf.
func (rt *Retriever) startGateway() {
	h := &libp2phttp.Host{StreamHost: bulkStreams{rt.host}}
	h.SetHTTPHandlerAtPath(GatewayProtocol, "/", &carServer{bs: rt.store.Unchecked(), leaves: rt.store, served: &rt.served})
	rt.http = h
	rt.host.SetStreamHandler(HavesProtocol, rt.serveHaves)
	rt.serving.Go(func() {
		if err := h.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rt.log.Warn("gateway over libp2p stopped", "err", err)
		}
	})
}

// gatewayCandidates are the connected peers that speak GatewayProtocol,
// rotated so that parallel fetches spread over them.
func (rt *Retriever) gatewayCandidates() []peer.ID {
	var out []peer.ID
	for _, p := range rt.host.Network().Peers() {
		if rt.isBad(p) {
			continue
		}
		// HTTP over libp2p is one stream protocol; which HTTP protocols a
		// peer serves is in its well-known document, read on first use.
		if ok, err := rt.host.Peerstore().SupportsProtocols(p, libp2phttp.ProtocolIDForMultistreamSelect); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	if len(out) > 1 {
		k := int(rt.next.Add(1) % uint64(len(out)))
		out = append(out[k:], out[:k]...)
	}
	return out
}

// carStream is one peer's CAR response for a whole DAG.
type carStream struct {
	peer peer.ID
	body io.ReadCloser
	br   *carv2.BlockReader
	// inOrder is set when the peer promised depth-first order with no
	// duplicates, the order in which a file's bytes can be read off.
	inOrder bool
}

// maxSection is the largest block a CAR stream may carry, as go-car's
// reader allows.
const maxSection = 8 << 20

// next reads the stream's next block. A raw leaf is read into a buffer
// from pool and comes as a *streamLeaf.
func (cs *carStream) next(pool *pagebuf.Pool) (blocks.Block, error) {
	c, r, n, err := cs.br.NextReader()
	if err != nil {
		return nil, err
	}
	if n > maxSection {
		return nil, fmt.Errorf("%w: a block of %d bytes", ErrBadBlock, n)
	}
	var data []byte
	if c.Prefix().Codec == cid.Raw {
		data = pool.Get(int(n))
	} else {
		data = make([]byte, n)
	}
	if _, err := io.ReadFull(r, data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	b, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	if c.Prefix().Codec != cid.Raw {
		return b, nil
	}
	l := &streamLeaf{BasicBlock: b, pool: pool}
	l.users.Store(2) // the reader it is handed to, and the pack
	return l, nil
}

// streamLeaf is a raw leaf off a CAR stream, in a buffer of the
// Retriever's pool. The buffer goes back once both its users are done
// with it: the reader it was handed to, and the pack it was written to.
// Anything else that keeps a block does not get one of these.
type streamLeaf struct {
	*blocks.BasicBlock
	pool  *pagebuf.Pool
	users atomic.Int32
}

// release says one user is done with b, if it is a streamLeaf.
func release(b blocks.Block) {
	l, ok := b.(*streamLeaf)
	if !ok {
		return
	}
	switch n := l.users.Add(-1); {
	case n == 0:
		l.pool.Put(l.RawData())
	case n < 0:
		panic("retrieval: a stream's block released once too often")
	}
}

func (rt *Retriever) openCAR(ctx context.Context, p peer.ID, root cid.Cid) (*carStream, error) {
	client, err := rt.client(p)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/ipfs/"+root.String()+"?format=car&dag-scope=all", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", carAccept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("gateway of %s: %s", p, resp.Status)
	}
	// Blocks are checked below, against their CIDs and their parents'
	// links, which is stricter than the CAR reader's own check.
	br, err := carv2.NewBlockReader(resp.Body, carv2.WithTrustedCAR(true))
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("gateway of %s: %w", p, err)
	}
	ct := resp.Header.Get("Content-Type")
	inOrder := strings.Contains(ct, "order=dfs") && strings.Contains(ct, "dups=n")
	return &carStream{peer: p, body: resp.Body, br: br, inOrder: inOrder}, nil
}

// blockSink stores the verified blocks of one file: its leaves, in file
// order, in a pack of their own (package packs). Blocks are written in
// large batches in the background, so that the disk writes overlap the
// hashing of the blocks that follow, and around the page cache when that
// is faster: what is read next comes from the blocks in memory.
type blockSink struct {
	rt    *Retriever
	w     *packs.Writer
	queue *batch.Writer[blocks.Block]
}

func newBlockSink(ctx context.Context, rt *Retriever) *blockSink {
	s := &blockSink{rt: rt}
	s.queue = batch.NewBlocks(func(bs []blocks.Block) error {
		defer func() {
			for _, b := range bs {
				release(b)
			}
		}()
		if s.w == nil {
			w, err := rt.store.NewWriter(packs.DirectWhenFaster())
			if err != nil {
				return err
			}
			s.w = w
		}
		return s.w.Add(ctx, bs)
	})
	return s
}

// add stores a block that came from a peer.
func (s *blockSink) add(b blocks.Block) error {
	s.rt.blocksReceived.Add(1)
	s.rt.bytesReceived.Add(uint64(len(b.RawData())))
	return s.queue.Add(b)
}

// repeat stores a block again where the file repeats it, which keeps the
// pack in file order; the store indexes one copy.
func (s *blockSink) repeat(b blocks.Block) error { return s.queue.Add(b) }

// flush writes everything received so far before returning.
func (s *blockSink) flush() error { return s.queue.Flush() }

// finish flushes and records that the pack holds the whole file root of
// size bytes, if it does: a file with data outside its leaves is not
// packed whole.
func (s *blockSink) finish(ctx context.Context, root cid.Cid, size int64) error {
	if err := s.flush(); err != nil {
		return err
	}
	if s.w == nil || s.w.Size() != size {
		return nil
	}
	return s.w.Finish(ctx, root)
}

// close flushes and ends the pack.
func (s *blockSink) close() error {
	err := s.flush()
	if s.w != nil {
		err = errors.Join(err, s.w.Close())
		s.w = nil
	}
	return err
}

func (rt *Retriever) noteGatewayError(p peer.ID, root cid.Cid, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrBadBlock):
		rt.bad.add(p)
		rt.log.Warn("peer sent bad blocks; disconnecting and not asking it again", "peer", p, "err", err)
		// Bitswap may have the same peer's bad copy in flight; dropping the
		// connection makes it ask the others.
		_ = rt.host.Network().ClosePeer(p)
	default:
		rt.log.Debug("gateway fetch failed", "peer", p, "root", root, "err", err)
	}
}

// dagVerifier accepts a block only if it hashes to its CID and the root or
// an already accepted block links to it.
type dagVerifier struct {
	wanted map[string]bool // multihash → still missing
}

func newDAGVerifier(root cid.Cid) *dagVerifier {
	return &dagVerifier{wanted: map[string]bool{string(root.Hash()): true}}
}

// check verifies b and, the first time it arrives, returns it decoded and
// expects its links; a repeat returns a nil node. sum, if not nil, is the
// SHA-256 of b's bytes, computed ahead with other blocks'.
func (v *dagVerifier) check(b blocks.Block, sum *[sha256.Size]byte) (ipld.Node, error) {
	c := b.Cid()
	missing, known := v.wanted[string(c.Hash())]
	if !known {
		return nil, fmt.Errorf("%w: %s is not linked from the DAG", ErrBadBlock, c)
	}
	if !hashes(c, b.RawData(), sum) {
		return nil, fmt.Errorf("%w: %s does not hash to its CID", ErrBadBlock, c)
	}
	if !missing {
		return nil, nil
	}
	v.wanted[string(c.Hash())] = false
	nd, err := blob.DecodeBlock(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBlock, err)
	}
	links, err := blob.Links(nd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBlock, err)
	}
	for _, l := range links {
		if _, seen := v.wanted[string(l.Hash())]; !seen {
			v.wanted[string(l.Hash())] = true
		}
	}
	return nd, nil
}

// seen reports whether a block was already received.
func (v *dagVerifier) seen(c cid.Cid) bool {
	missing, known := v.wanted[string(c.Hash())]
	return known && !missing
}

// hashes reports whether data hashes to c. sum, if not nil, is data's
// SHA-256, already computed: for a sha2-256 CID it is compared instead of
// hashing data again.
func hashes(c cid.Cid, data []byte, sum *[sha256.Size]byte) bool {
	if want, ok := sha256Digest(c); sum != nil && ok {
		return want == *sum
	}
	got, err := c.Prefix().Sum(data)
	return err == nil && got.Equals(c)
}

// sha256Digest returns the digest c names, if c's hash is SHA-256.
func sha256Digest(c cid.Cid) ([sha256.Size]byte, bool) {
	h := c.Hash()
	if len(h) != 2+sha256.Size || h[0] != mh.SHA2_256 || h[1] != sha256.Size {
		return [sha256.Size]byte{}, false
	}
	return [sha256.Size]byte(h[2:]), true
}
