// Package retrieval fetches a node's blobs and blocks from where they are:
// the local store, else the connected peers (one CAR stream of a whole
// blob from one peer, or its leaves from many at once), else holders the
// router finds, else bitswap. Every block is checked against its CID and
// stored as it arrives. It also serves this node's blocks to peers: the
// trustless gateway over libp2p and the haves protocol.
//
// The node owns the stores, the host and bitswap; a Retriever only reads
// and writes through them, and never calls back up into the node.
package retrieval

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2phttp "github.com/libp2p/go-libp2p/p2p/http"
	"github.com/shoal-ipfs/shoal/internal/pagebuf"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/packs"
	"github.com/shoal-ipfs/shoal/pkg/routing"
	"golang.org/x/sync/singleflight"
)

// Options are what a Retriever works with.
type Options struct {
	// Host is the node's libp2p host: the peers to ask, and where this
	// node serves its blocks.
	Host host.Host
	// Store holds the node's blocks; fetched blobs go into its packs.
	Store *packs.Store
	// DAG reads blocks here, else over the block exchange (bitswap): the
	// last resort for a block no peer's gateway served.
	DAG ipld.DAGService
	// Router finds holders beyond the connected peers; nil for none.
	Router routing.Router
	// Bad are the peers caught sending bad blocks; the node's connection
	// gater refuses them too. Nil for a list of the Retriever's own.
	Bad *BadPeers
	Log *slog.Logger
}

// Retriever fetches for one node and serves its blocks to peers.
type Retriever struct {
	host    host.Host
	store   *packs.Store
	dag     ipld.DAGService
	offline ipld.DAGService // the local store only: what peers are told and sent
	router  routing.Router
	bad     *BadPeers
	log     *slog.Logger

	http      *libp2phttp.Host
	next      atomic.Uint64 // rotates the peers asked first
	clientsMu sync.Mutex
	clients   map[peer.ID]http.Client
	haves     havesCache // bitmaps served to peers (HavesProtocol)
	// reads fetches each block once however many reads of a blob want it
	// at once (spans that share a block, read side by side).
	reads singleflight.Group
	// buffers hold the leaves read off CAR streams until they are
	// stored and read.
	buffers pagebuf.Pool

	blocksReceived, bytesReceived atomic.Uint64
	served                        atomic.Uint64 // single blocks served to peers
	localReads, peerReads         atomic.Uint64
	serving                       sync.WaitGroup
}

// New starts serving the node's blocks to its peers and returns the
// Retriever that fetches for it. Close stops the serving.
func New(opts Options) *Retriever {
	rt := &Retriever{
		host: opts.Host, store: opts.Store, dag: opts.DAG, router: opts.Router, bad: opts.Bad, log: opts.Log,
		offline: merkledag.NewDAGService(blockservice.New(opts.Store, nil)),
	}
	if rt.bad == nil {
		rt.bad = NewBadPeers()
	}
	if rt.log == nil {
		rt.log = slog.New(slog.DiscardHandler)
	}
	rt.startGateway()
	return rt
}

// Close stops serving peers.
func (rt *Retriever) Close() error {
	rt.host.RemoveStreamHandler(HavesProtocol)
	err := rt.http.Close()
	rt.serving.Wait()
	return err
}

// Cat reads the UnixFS file c, fetching what is missing and storing it as
// it goes (see the package doc for where from). Blocks it fetches are
// spared by garbage collection only under a lease that the caller holds
// until it has pinned them.
//
// whole, if not nil, is fed every byte the reader hands out, in order. Off
// a peer's CAR stream each leaf is then hashed once, for its CID and for
// whole (sha256x.Stream.ChunkIf): a pull that checks the blob's digest
// need not hash its bytes again.
func (rt *Retriever) Cat(ctx context.Context, c cid.Cid, whole *sha256x.Stream) (io.ReadCloser, error) {
	r, err := rt.catFrom(ctx, c)
	if err != nil || whole == nil {
		return r, err
	}
	if f, ok := r.(*gatewayFile); ok {
		f.whole = whole
		return f, nil
	}
	return teeCloser{Reader: io.TeeReader(r, whole), Closer: r}, nil
}

type teeCloser struct {
	io.Reader
	io.Closer
}

// ReadAt reads len(p) bytes of the UnixFS file c from off, fetching only
// the blocks that hold them (and the path to them). It returns io.EOF with
// fewer bytes at the end of the file.
//
// A block missing here is asked of the peers' gateways first: one round
// trip, where a new bitswap session takes two (want-have, then
// want-block), and a lazy mount's reads wait on every one.
func (rt *Retriever) ReadAt(ctx context.Context, c cid.Cid, p []byte, off int64) (int, error) {
	get := &peerBlocks{rt: rt, peers: rt.gatewayCandidates(), session: merkledag.NewSession(ctx, rt.dag)}
	return blob.ReadAt(ctx, get, c, p, off)
}

// Stat counts what a Retriever received and served.
type Stat struct {
	// BlocksReceived and BytesReceived count what came from peers'
	// gateways (bitswap keeps its own count).
	BlocksReceived, BytesReceived uint64
	// LocalReads and PeerReads count blobs read (Cat) that were stored
	// here when asked for, and those that had to come from peers.
	LocalReads, PeerReads uint64
	// Served counts single blocks served to peers fetching from many
	// peers at once.
	Served uint64
}

// Stat reports what was received and served so far.
func (rt *Retriever) Stat() Stat {
	return Stat{
		BlocksReceived: rt.blocksReceived.Load(), BytesReceived: rt.bytesReceived.Load(),
		LocalReads: rt.localReads.Load(), PeerReads: rt.peerReads.Load(),
		Served: rt.served.Load(),
	}
}

// ForgetHaves drops what this node last told peers it holds: after a
// garbage collection, leaves found before may be gone.
func (rt *Retriever) ForgetHaves() { rt.haves.forget() }

// BadPeers are peers caught sending blocks that do not verify: they are
// not asked again, and the node's connection gater refuses them.
type BadPeers struct {
	mu  sync.Mutex
	set map[peer.ID]bool
}

// NewBadPeers returns an empty list.
func NewBadPeers() *BadPeers { return &BadPeers{set: map[peer.ID]bool{}} }

// Has reports whether p was caught.
func (b *BadPeers) Has(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.set[p]
}

func (b *BadPeers) add(p peer.ID) {
	b.mu.Lock()
	b.set[p] = true
	b.mu.Unlock()
}

func (rt *Retriever) isBad(p peer.ID) bool { return rt.bad.Has(p) }
