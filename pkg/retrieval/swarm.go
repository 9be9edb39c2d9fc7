package retrieval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/packs"
)

// Swarm fetching: with several peers to ask, a blob is fetched leaf by
// leaf rather than as one stream from one peer, so that nodes pulling the
// same image at once serve each other instead of all drawing on the one
// that had it first.
//
//   - Each node learns which leaves its peers hold (HavesProtocol) and
//     spreads its asks over them, rarest leaves first; a peer holding
//     everything still wanted is asked only for what nobody else holds,
//     and each such leaf by one node only (fetchFromPeers says how).
//   - Leaves come over the gateway protocol (format=raw); a peer without
//     the block answers at once that it has none, and the next is asked.
//   - Every block is checked against its CID; a peer sending a bad one is
//     refused from then on, and a leaf no peer serves comes over bitswap.
const (
	// swarmMinLeaves is the smallest blob fetched this way: below it, one
	// stream is as good.
	swarmMinLeaves = 4
	swarmWorkers   = 8
	// swarmAskTimeout bounds one request for one leaf, so that a peer cut
	// off mid-pull costs a bounded delay.
	swarmAskTimeout = 10 * time.Second
)

var errNotSwarmed = errors.New("blob too small to fetch from many peers")

// maxBlockSize bounds a block read from a peer: libp2p's own limit for
// blocks is 2 MiB, and shoal's layouts make 1 MiB at most.
const maxBlockSize = 2 << 20

// swarmRead reads the blob at c in order while its leaves are fetched
// from peers as above, in the background; its inner nodes come over
// the peers' gateways first. The leaf the reader waits for is fetched next, so the
// read makes steady progress; once the background fetch ends (done or
// failed), what is still missing comes over bitswap. Closing the reader
// stops the fetch.
func (rt *Retriever) swarmRead(ctx context.Context, c cid.Cid, peers []peer.ID) (io.ReadCloser, error) {
	session := merkledag.NewSession(ctx, rt.dag)
	shape, err := blob.ShapeOf(ctx, &peerBlocks{rt: rt, peers: peers, session: session}, c)
	if err != nil {
		return nil, err
	}
	if len(shape.Leaves) < swarmMinLeaves {
		return nil, errNotSwarmed
	}
	leaves := make([]cid.Cid, len(shape.Leaves))
	for i, l := range shape.Leaves {
		leaves[i] = l.CID
	}
	missing, err := rt.missing(ctx, leaves)
	if err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		return blob.Open(ctx, rt.dag, c)
	}
	pack, err := rt.placedPack(shape)
	if err != nil {
		return nil, err
	}
	put := rt.store.Put
	if pack != nil {
		put = func(ctx context.Context, b blocks.Block) error {
			if placed, err := pack.Put(ctx, b); placed || err != nil {
				return err
			}
			return rt.store.Put(ctx, b)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	known, waitHaves := rt.watchHaves(ctx, c, leaves, peers)
	mark, endHaves := rt.liveHaves(ctx, c, known.index)
	sb := &swarmBlocks{rt: rt, session: session, stored: make(chan struct{}), placed: map[cid.Cid]bool{}}
	store := put
	put = func(ctx context.Context, b blocks.Block) error {
		if err := store(ctx, b); err != nil {
			return err
		}
		mark(b.Cid())
		if pack != nil && pack.Holds(b.Cid()) {
			sb.mu.Lock()
			sb.placed[b.Cid()] = true
			sb.mu.Unlock()
		}
		return nil
	}
	sb.lp = newLeafPicker(rt.host.ID(), peers, missing, known, rt.isBad)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rt.fetchFromPeers(ctx, session, sb.lp, sb.notify, put); err != nil && ctx.Err() == nil {
			rt.log.Debug("fetching from many peers failed; the rest over bitswap", "cid", c, "err", err)
		}
		if pack != nil {
			if err := pack.Finish(ctx, c); err != nil {
				rt.log.Debug("recording a whole-blob pack failed", "cid", c, "err", err)
			}
		}
		sb.end()
	}()
	stop := func() {
		cancel()
		<-done
		waitHaves()
		endHaves()
		if pack != nil {
			_ = pack.Close()
		}
	}
	if pack != nil {
		return &packReader{ctx: ctx, sb: sb, pack: pack, leaves: shape.Leaves, stop: stop, fetched: done}, nil
	}
	r, err := blob.Open(ctx, sb, c)
	if err != nil {
		stop()
		return nil, err
	}
	return &swarmReader{prefetching: &prefetching{Reader: r, stop: stop}, fetched: done}, nil
}

// packReader reads a blob while a swarm fetch fills its pack: a leaf the
// fetch placed is read from the pack, straight into the caller's buffer;
// any other (here before the fetch, or come over bitswap after it) as a
// block. Like swarmReader, it returns io.EOF once the fetch has ended.
type packReader struct {
	ctx     context.Context
	sb      *swarmBlocks
	pack    *packs.PlacedWriter
	leaves  []blob.Leaf
	stop    func()
	fetched <-chan struct{}

	leaf  int   // the leaf being read
	start int64 // its offset in the blob
	off   int64 // the next byte to read
}

func (r *packReader) Read(p []byte) (int, error) {
	if r.leaf == len(r.leaves) {
		<-r.fetched
		return 0, io.EOF
	}
	l := r.leaves[r.leaf]
	end := r.start + int64(l.Size)
	want := p[:min(int64(len(p)), end-r.off)]
	var n int
	for {
		r.sb.mu.Lock()
		placed, stored, ended := r.sb.placed[l.CID], r.sb.stored, r.sb.ended
		r.sb.mu.Unlock()
		if placed {
			k, err := r.pack.ReadAt(want, r.off)
			if err != nil {
				return 0, fmt.Errorf("blob leaf %s: %w", l.CID, err)
			}
			n = k
			break
		}
		// Here already, or fetched some other way than into the pack
		// (over bitswap, when no peer served it).
		local, err := r.sb.rt.store.Has(r.ctx, l.CID)
		if err != nil {
			return 0, err
		}
		if ended || local {
			nd, err := r.sb.Get(r.ctx, l.CID)
			if err != nil {
				return 0, err
			}
			data := nd.RawData()
			if int64(len(data)) != int64(l.Size) {
				return 0, fmt.Errorf("blob leaf %s: %d bytes, its parent says %d", l.CID, len(data), l.Size)
			}
			n = copy(want, data[r.off-r.start:])
			break
		}
		r.sb.lp.hurry(l.CID)
		select {
		case <-stored:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	r.off += int64(n)
	if r.off == end {
		r.leaf++
		r.start = end
	}
	return n, nil
}

func (r *packReader) Close() error {
	r.stop()
	return nil
}

// placedPack starts a pack that the leaves of a blob fill in as they
// arrive, each at its place; nil if the blob has leaves other than raw
// blocks, whose data would not be the blob's.
func (rt *Retriever) placedPack(shape blob.Shape) (*packs.PlacedWriter, error) {
	places := make([]packs.Place, len(shape.Leaves))
	var off int64
	for i, l := range shape.Leaves {
		if l.CID.Prefix().Codec != cid.Raw {
			return nil, nil
		}
		places[i] = packs.Place{Hash: l.CID.Hash(), Offset: off, Length: int64(l.Size)}
		off += int64(l.Size)
	}
	return rt.store.NewPlacedWriter(places)
}

// swarmReader waits, at the end of the blob, for the fetch to end, so
// that when it returns io.EOF the blob's pack is complete and recorded.
type swarmReader struct {
	*prefetching
	fetched <-chan struct{}
}

func (r *swarmReader) Read(p []byte) (int, error) {
	k, err := r.prefetching.Read(p)
	if errors.Is(err, io.EOF) {
		<-r.fetched
	}
	return k, err
}

// swarmBlocks gets a blob's blocks for its reader while a swarm fetch
// stores them: a block not here yet is waited for, and hurried.
type swarmBlocks struct {
	rt      *Retriever
	lp      *leafPicker
	session ipld.NodeGetter // once the fetch has ended

	mu     sync.Mutex
	stored chan struct{} // closed when a block is stored, then replaced
	ended  bool
	placed map[cid.Cid]bool // leaves written into the blob's pack
}

func (sb *swarmBlocks) notify() {
	sb.mu.Lock()
	close(sb.stored)
	sb.stored = make(chan struct{})
	sb.mu.Unlock()
}

func (sb *swarmBlocks) end() {
	sb.mu.Lock()
	sb.ended = true
	close(sb.stored)
	sb.stored = make(chan struct{})
	sb.mu.Unlock()
}

func (sb *swarmBlocks) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	for {
		sb.mu.Lock()
		stored, ended := sb.stored, sb.ended
		sb.mu.Unlock()
		if b, err := sb.rt.store.Get(ctx, c); err == nil {
			return blob.DecodeBlock(b)
		}
		if ended {
			return sb.session.Get(ctx, c)
		}
		sb.lp.hurry(c)
		select {
		case <-stored:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (sb *swarmBlocks) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	go func() {
		defer close(out)
		for _, c := range cs {
			nd, err := sb.Get(ctx, c)
			out <- &ipld.NodeOption{Node: nd, Err: err}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// peerBlocks gets blocks from the store, else each from the first of the
// peers' gateways that has it, else over bitswap. A swarm fetch reads a
// blob's inner nodes this way: over bitswap they would wait on a session
// that may have just lost the peer it asked (one caught lying, say) until
// the session looks again, seconds later.
type peerBlocks struct {
	rt      *Retriever
	peers   []peer.ID
	session ipld.NodeGetter
}

func (g *peerBlocks) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if b, err := g.rt.store.Get(ctx, c); err == nil {
		return blob.DecodeBlock(b)
	}
	nd, err, _ := g.rt.reads.Do(c.KeyString(), func() (any, error) {
		if b, err := g.rt.store.Get(ctx, c); err == nil {
			return blob.DecodeBlock(b)
		}
		peers := slices.Clone(g.peers)
		rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		nd, _, err := g.rt.fetchBlock(ctx, g.session, c, peers, g.rt.store.Put, nil)
		return nd, err
	})
	if err != nil {
		return nil, err
	}
	return nd.(ipld.Node), nil
}

func (g *peerBlocks) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	go func() {
		defer close(out)
		var wg sync.WaitGroup
		sem := make(chan struct{}, swarmWorkers)
		for _, c := range cs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				nd, err := g.Get(ctx, c)
				out <- &ipld.NodeOption{Node: nd, Err: err}
			})
		}
		wg.Wait()
	}()
	return out
}

// missing is those of blocks not stored here, each once.
func (rt *Retriever) missing(ctx context.Context, blocks []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	for _, b := range blocks {
		if seen[b] {
			continue
		}
		seen[b] = true
		if has, err := rt.store.Has(ctx, b); err != nil {
			return nil, err
		} else if !has {
			out = append(out, b)
		}
	}
	return out, nil
}

// Fetch makes blocks local: each from the connected peers' gateways as
// above, else over bitswap. Blocks already here are not asked for.
func (rt *Retriever) Fetch(ctx context.Context, blocks []cid.Cid) error {
	missing, err := rt.missing(ctx, blocks)
	if err != nil || len(missing) == 0 {
		return err
	}
	session := merkledag.NewSession(ctx, rt.dag)
	lp := newLeafPicker(rt.host.ID(), rt.gatewayCandidates(), missing, nil, rt.isBad)
	return rt.fetchFromPeers(ctx, session, lp, nil, rt.store.Put)
}

// fetchFromPeers stores the leaves lp picks with put, several at once,
// each from the peer it names, else from the others, else over session;
// stored (if not nil) is called after each.
func (rt *Retriever) fetchFromPeers(ctx context.Context, session ipld.NodeGetter, lp *leafPicker, stored func(), put func(context.Context, blocks.Block) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex
		errs []error
	)
	var wg sync.WaitGroup
	for range swarmWorkers {
		wg.Go(func() {
			// Each leaf is dropped once put has stored it, so one buffer
			// per worker holds them all in turn.
			var buf []byte
			for {
				leaf, prefer, ok := lp.next()
				if !ok {
					return
				}
				_, from, err := rt.fetchBlock(ctx, session, leaf, lp.order(prefer), put, &buf)
				lp.done(prefer, from)
				if err == nil && stored != nil {
					stored()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					lp.stop()
					cancel()
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// fetchBlock stores block c with put, from the first of peers that has
// it, else over bitswap (into the blockstore); it returns the block and
// the peer that served it ("" for bitswap). With buf, a block from a peer
// is read into *buf (grown as needed), and is valid only until the next
// use of it: put must not keep it.
func (rt *Retriever) fetchBlock(ctx context.Context, session ipld.NodeGetter, c cid.Cid, peers []peer.ID, put func(context.Context, blocks.Block) error, buf *[]byte) (ipld.Node, peer.ID, error) {
	for _, p := range peers {
		if rt.isBad(p) {
			continue
		}
		b, err := rt.askRaw(ctx, p, c, buf)
		if err != nil {
			rt.noteGatewayError(p, c, err)
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
			continue
		}
		if b == nil {
			continue // the peer does not have it
		}
		nd, err := blob.DecodeBlock(b)
		if err != nil {
			return nil, "", fmt.Errorf("block %s from %s: %w", c, p, err)
		}
		if err := put(ctx, b); err != nil {
			return nil, "", err
		}
		rt.blocksReceived.Add(1)
		rt.bytesReceived.Add(uint64(len(b.RawData())))
		return nd, p, nil
	}
	nd, err := session.Get(ctx, c)
	if err != nil {
		return nil, "", fmt.Errorf("block %s: no peer served it: %w", c, err)
	}
	return nd, "", nil
}

// askRaw asks peer p's gateway for block c: the block, checked against its
// CID; nil if p does not have it. With buf, the block's data is read into
// *buf, grown as needed.
func (rt *Retriever) askRaw(ctx context.Context, p peer.ID, c cid.Cid, buf *[]byte) (blocks.Block, error) {
	ctx, cancel := context.WithTimeout(ctx, swarmAskTimeout)
	defer cancel()
	client, err := rt.client(p)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/ipfs/"+c.String()+"?format=raw", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.ipld.raw")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	default:
		return nil, fmt.Errorf("gateway of %s: %s", p, resp.Status)
	}
	var data []byte
	if size := resp.ContentLength; size >= 0 && size <= maxBlockSize {
		// One buffer of the block's size, not ReadAll's doublings.
		if buf == nil {
			data = make([]byte, size)
		} else {
			if int64(cap(*buf)) < size {
				*buf = make([]byte, size)
			}
			data = (*buf)[:size]
		}
		_, err = io.ReadFull(resp.Body, data)
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxBlockSize+1))
	}
	if err != nil {
		return nil, err
	}
	if !hashes(c, data, nil) {
		return nil, fmt.Errorf("%w: %s from %s does not hash to its CID", ErrBadBlock, c, p)
	}
	return blocks.NewBlockWithCid(data, c)
}
