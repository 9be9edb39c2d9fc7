package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/gateway"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	libp2phttp "github.com/libp2p/go-libp2p/p2p/http"
	"github.com/shoal-ipfs/shoal/pkg/blob"
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
var ErrBadBlock = errors.New("peer sent a block that does not verify")

type gatewayPeers struct {
	http *libp2phttp.Host
	next atomic.Uint64
	mu   sync.Mutex
	bad  map[peer.ID]bool // peers caught sending bad blocks, skipped from then on

	blocksReceived atomic.Uint64
	bytesReceived  atomic.Uint64
}

// startGateway serves this node's local blocks to peers over GatewayProtocol.
// Only blocks stored here are served: a request never makes this node fetch
// from others on a peer's behalf.
func (n *Node) startGateway() error {
	backend, err := gateway.NewBlocksBackend(blockservice.New(n.bstore, nil))
	if err != nil {
		return err
	}
	h := &libp2phttp.Host{StreamHost: n.host}
	h.SetHTTPHandlerAtPath(GatewayProtocol, "/", gateway.NewHandler(gateway.Config{}, backend))
	n.gw = &gatewayPeers{http: h, bad: map[peer.ID]bool{}}
	go func() {
		if err := h.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("gateway over libp2p stopped", "err", err)
		}
	}()
	return nil
}

// gatewayCandidates are the connected peers that speak GatewayProtocol,
// rotated so that parallel fetches spread over them.
func (n *Node) gatewayCandidates() []peer.ID {
	var out []peer.ID
	n.gw.mu.Lock()
	for _, p := range n.host.Network().Peers() {
		if n.gw.bad[p] {
			continue
		}
		// HTTP over libp2p is one stream protocol; which HTTP protocols a
		// peer serves is in its well-known document, read on first use.
		if ok, err := n.host.Peerstore().SupportsProtocols(p, libp2phttp.ProtocolIDForMultistreamSelect); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	n.gw.mu.Unlock()
	if len(out) > 1 {
		k := int(n.gw.next.Add(1) % uint64(len(out)))
		out = append(out[k:], out[:k]...)
	}
	return out
}

// fetchFromGateways tries to get the whole DAG at root from one peer's
// gateway. It reports whether every block arrived; whatever arrived is
// stored either way, so bitswap only has the rest to find.
func (n *Node) fetchFromGateways(ctx context.Context, root cid.Cid, onBlock func(int)) bool {
	for _, p := range n.gatewayCandidates() {
		complete, err := n.fetchCAR(ctx, p, root, onBlock)
		if errors.Is(err, ErrBadBlock) {
			n.gw.mu.Lock()
			n.gw.bad[p] = true
			n.gw.mu.Unlock()
			n.log.Warn("peer sent bad blocks; not asking it again", "peer", p, "err", err)
		} else if err != nil {
			n.log.Debug("gateway fetch failed", "peer", p, "root", root, "err", err)
		}
		if complete {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

func (n *Node) fetchCAR(ctx context.Context, p peer.ID, root cid.Cid, onBlock func(int)) (bool, error) {
	client, err := n.gw.http.NamespacedClient(GatewayProtocol, peer.AddrInfo{ID: p})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/ipfs/"+root.String()+"?format=car&dag-scope=all", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", carAccept)
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return false, fmt.Errorf("gateway of %s: %s", p, resp.Status)
	}
	br, err := carv2.NewBlockReader(resp.Body)
	if err != nil {
		return false, fmt.Errorf("gateway of %s: %w", p, err)
	}
	v := newDAGVerifier(root)
	var batch []blocks.Block
	var batchBytes int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := n.bstore.PutMany(ctx, batch)
		batch, batchBytes = batch[:0], 0
		return err
	}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = flush()
			return false, fmt.Errorf("gateway of %s: %w", p, err)
		}
		if err := v.check(b); err != nil {
			_ = flush()
			return false, fmt.Errorf("%s: %w", p, err)
		}
		batch = append(batch, b)
		batchBytes += len(b.RawData())
		n.gw.blocksReceived.Add(1)
		n.gw.bytesReceived.Add(uint64(len(b.RawData())))
		if onBlock != nil {
			onBlock(len(b.RawData()))
		}
		if batchBytes >= 8<<20 {
			if err := flush(); err != nil {
				return false, err
			}
		}
	}
	if err := flush(); err != nil {
		return false, err
	}
	return v.done(), nil
}

// dagVerifier accepts a block only if it hashes to its CID and the root or
// an already accepted block links to it.
type dagVerifier struct {
	wanted map[string]bool // multihash → still missing
	left   int
}

func newDAGVerifier(root cid.Cid) *dagVerifier {
	return &dagVerifier{wanted: map[string]bool{string(root.Hash()): true}, left: 1}
}

func (v *dagVerifier) check(b blocks.Block) error {
	c := b.Cid()
	missing, known := v.wanted[string(c.Hash())]
	if !known {
		return fmt.Errorf("%w: %s is not linked from the DAG", ErrBadBlock, c)
	}
	sum, err := c.Prefix().Sum(b.RawData())
	if err != nil || !sum.Equals(c) {
		return fmt.Errorf("%w: %s does not hash to its CID", ErrBadBlock, c)
	}
	if !missing {
		return nil
	}
	v.wanted[string(c.Hash())] = false
	v.left--
	nd, err := blob.DecodeBlock(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBlock, err)
	}
	links, err := blob.Links(nd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBlock, err)
	}
	for _, l := range links {
		if _, seen := v.wanted[string(l.Hash())]; !seen {
			v.wanted[string(l.Hash())] = true
			v.left++
		}
	}
	return nil
}

func (v *dagVerifier) done() bool { return v.left == 0 }
