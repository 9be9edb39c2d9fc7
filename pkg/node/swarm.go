package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/blob"
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

// swarmFetch makes every block of the blob at c local, its leaves drawn
// from peers as above. Its inner nodes come over bitswap.
func (n *Node) swarmFetch(ctx context.Context, c cid.Cid, peers []peer.ID) error {
	session := merkledag.NewSession(ctx, n.dag)
	leaves, err := blob.Leaves(ctx, session, c)
	if err != nil {
		return err
	}
	if len(leaves) < swarmMinLeaves {
		return errNotSwarmed
	}
	missing, err := n.missing(ctx, leaves)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte(n.host.ID()))
	start := int(binary.BigEndian.Uint64(h.Sum(nil)) % uint64(len(missing)))
	missing = append(missing[start:], missing[:start]...)
	hctx, stopHaves := context.WithCancel(ctx)
	known, waitHaves := n.watchHaves(hctx, c, leaves, peers)
	defer waitHaves()
	defer stopHaves()
	if err := n.fetchFromPeers(ctx, session, missing, peers, known); err != nil {
		return fmt.Errorf("fetch %s: %w", c, err)
	}
	return nil
}

// missing is those of blocks not stored here, each once.
func (n *Node) missing(ctx context.Context, blocks []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	for _, b := range blocks {
		if seen[b] {
			continue
		}
		seen[b] = true
		if has, err := n.bstore.Has(ctx, b); err != nil {
			return nil, err
		} else if !has {
			out = append(out, b)
		}
	}
	return out, nil
}

// Fetch makes blocks local: each from the connected peers' gateways as
// above, else over bitswap. Blocks already here are not asked for.
func (n *Node) Fetch(ctx context.Context, blocks []cid.Cid) error {
	if n.host == nil {
		return errors.New("fetch blocks: node is offline")
	}
	missing, err := n.missing(ctx, blocks)
	if err != nil || len(missing) == 0 {
		return err
	}
	session := merkledag.NewSession(ctx, n.dag)
	return n.fetchFromPeers(ctx, session, missing, n.gatewayCandidates(), nil)
}

// fetchFromPeers stores the blocks of missing, several at once, each from
// the peer a leafPicker names (known says who holds what; nil: nothing
// known), else from the others, else over session.
func (n *Node) fetchFromPeers(ctx context.Context, session ipld.NodeGetter, missing []cid.Cid, peers []peer.ID, known *haves) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lp := newLeafPicker(n.host.ID(), peers, missing, known, n.gw.isBad)
	var (
		mu   sync.Mutex
		errs []error
	)
	var wg sync.WaitGroup
	for range swarmWorkers {
		wg.Go(func() {
			for {
				leaf, prefer, ok := lp.next()
				if !ok {
					return
				}
				from, err := n.fetchLeaf(ctx, session, leaf, lp.order(prefer))
				lp.done(prefer, from)
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

// fetchLeaf stores one block, from the first of peers that has it, else
// over bitswap; it returns the peer that served it ("" for bitswap).
func (n *Node) fetchLeaf(ctx context.Context, session ipld.NodeGetter, c cid.Cid, peers []peer.ID) (peer.ID, error) {
	for _, p := range peers {
		if n.gw.isBad(p) {
			continue
		}
		b, err := n.askRaw(ctx, p, c)
		if err != nil {
			n.noteGatewayError(p, c, err)
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			continue
		}
		if b == nil {
			continue // the peer does not have it
		}
		if err := n.bstore.Put(ctx, b); err != nil {
			return "", err
		}
		n.gw.blocksReceived.Add(1)
		n.gw.bytesReceived.Add(uint64(len(b.RawData())))
		return p, nil
	}
	if _, err := session.Get(ctx, c); err != nil {
		return "", fmt.Errorf("block %s: no peer served it: %w", c, err)
	}
	return "", nil
}

// askRaw asks peer p's gateway for block c: the block, checked against its
// CID; nil if p does not have it.
func (n *Node) askRaw(ctx context.Context, p peer.ID, c cid.Cid) (blocks.Block, error) {
	ctx, cancel := context.WithTimeout(ctx, swarmAskTimeout)
	defer cancel()
	client, err := n.gw.client(p)
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBlockSize+1))
	if err != nil {
		return nil, err
	}
	if sum, err := c.Prefix().Sum(data); err != nil || !sum.Equals(c) {
		return nil, fmt.Errorf("%w: %s from %s does not hash to its CID", ErrBadBlock, c, p)
	}
	return blocks.NewBlockWithCid(data, c)
}
