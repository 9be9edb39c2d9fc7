package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// The DHT finds peers that hold content when no connected peer does, and
// lets group members find each other. What a node announces on it is
// only what another node asks for first: image roots and the roots of
// their blobs, never every block (a blob's blocks come from whoever
// provided its root; docs/benchmarks.md measures the difference).

// reprovideInterval renews provider records before they expire (48 h).
const reprovideInterval = 12 * time.Hour

// provideTimeout bounds one announcement.
const provideTimeout = time.Minute

// dhtNode is the node's DHT and what it announces.
type dhtNode struct {
	*dht.IpfsDHT
	announce bool // a daemon: announce images and answer queries

	mu      sync.Mutex
	queue   []cid.Cid
	queued  map[cid.Cid]bool
	wake    chan struct{}
	stop    context.CancelFunc
	stopped chan struct{}

	provided    atomic.Uint64
	provideTime atomic.Int64 // nanoseconds spent announcing
	failed      atomic.Uint64
}

// startDHT joins the DHT of mode. A daemon (announce) is a DHT server and
// announces what it holds; other commands only query.
func (n *Node) startDHT(mode string, announce bool) error {
	if mode == config.DHTOff {
		return nil
	}
	opts := []dht.Option{
		dht.Datastore(namespace.Wrap(n.meta, ds.NewKey("/shoal/dht"))),
		dht.Mode(dht.ModeClient),
	}
	if announce {
		opts[1] = dht.Mode(dht.ModeServer)
	}
	if mode == config.DHTLAN {
		opts = append(opts,
			dht.ProtocolExtension("/lan"),
			dht.QueryFilter(dht.PrivateQueryFilter),
			dht.RoutingTableFilter(dht.PrivateRoutingTableFilter))
	}
	d, err := dht.New(n.host, opts...)
	if err != nil {
		return fmt.Errorf("start the %s DHT: %w", mode, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.dht = &dhtNode{IpfsDHT: d, announce: announce, queued: map[cid.Cid]bool{}, wake: make(chan struct{}, 1), stop: cancel, stopped: make(chan struct{})}
	if !announce {
		close(n.dht.stopped)
		return nil
	}
	go n.announceLoop(ctx)
	return nil
}

func (d *dhtNode) close() error {
	d.stop()
	<-d.stopped
	return d.IpfsDHT.Close()
}

// Routing is the node's DHT, nil when it has none.
func (n *Node) Routing() routing.Routing {
	if n.dht == nil {
		return nil
	}
	return n.dht.IpfsDHT
}

// Provide announces that this node holds cids, in the background; it does
// nothing unless the node is a daemon on a DHT.
func (n *Node) Provide(cids ...cid.Cid) {
	d := n.dht
	if d == nil || !d.announce {
		return
	}
	d.mu.Lock()
	for _, c := range cids {
		if !d.queued[c] {
			d.queued[c] = true
			d.queue = append(d.queue, c)
		}
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// announceLoop announces what is queued, once the routing table has
// peers, and every pinned image again every reprovideInterval.
func (n *Node) announceLoop(ctx context.Context) {
	d := n.dht
	defer close(d.stopped)
	n.provideImages(ctx)
	reprovide := time.NewTicker(reprovideInterval)
	defer reprovide.Stop()
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-retry.C:
		case <-reprovide.C:
			n.provideImages(ctx)
		}
		if d.RoutingTable().Size() == 0 {
			continue // nobody to tell yet
		}
		for {
			d.mu.Lock()
			if len(d.queue) == 0 {
				d.mu.Unlock()
				break
			}
			c := d.queue[0]
			d.mu.Unlock()
			start := time.Now()
			pctx, cancel := context.WithTimeout(ctx, provideTimeout)
			err := d.IpfsDHT.Provide(pctx, c, true)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				d.failed.Add(1)
				n.log.Debug("announcing on the DHT failed; trying again", "cid", c, "err", err)
				break
			}
			d.provided.Add(1)
			d.provideTime.Add(int64(time.Since(start)))
			d.mu.Lock()
			d.queue = d.queue[1:]
			delete(d.queued, c)
			d.mu.Unlock()
		}
	}
}

// provideImages queues the blobs of every pinned image.
func (n *Node) provideImages(ctx context.Context) {
	imgs, err := n.Images(ctx)
	if err != nil {
		n.log.Warn("listing images to announce", "err", err)
		return
	}
	for _, img := range imgs {
		cs, err := decodeCIDs(img.Blobs)
		if err != nil {
			continue
		}
		n.Provide(cs...)
	}
}

// DHTStat is what the node announced on the DHT.
type DHTStat struct {
	Mode        string
	Peers       int // in the routing table
	Provided    uint64
	ProvideTime time.Duration
	Failed      uint64
	Queued      int
}

// DHTStat reports the DHT's state; the zero value when there is none.
func (n *Node) DHTStat() DHTStat {
	d := n.dht
	if d == nil {
		return DHTStat{Mode: config.DHTOff}
	}
	d.mu.Lock()
	queued := len(d.queue)
	d.mu.Unlock()
	return DHTStat{
		Mode: n.cfg.Swarm.DHT, Peers: d.RoutingTable().Size(),
		Provided: d.provided.Load(), ProvideTime: time.Duration(d.provideTime.Load()),
		Failed: d.failed.Load(), Queued: queued,
	}
}

var errNoDHT = errors.New("the node has no DHT (swarm.dht = \"off\")")

// FindProviders connects to up to max peers that the DHT says hold c,
// waiting at most wait, and returns those it is connected to.
func (n *Node) FindProviders(ctx context.Context, c cid.Cid, max int, wait time.Duration) ([]peer.ID, error) {
	if n.dht == nil {
		return nil, errNoDHT
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []peer.ID
	)
	for p := range n.dht.FindProvidersAsync(ctx, c, max) {
		if p.ID == n.host.ID() {
			continue
		}
		wg.Go(func() {
			if n.host.Network().Connectedness(p.ID) != network.Connected {
				if err := n.host.Connect(ctx, p); err != nil {
					return
				}
			}
			mu.Lock()
			out = append(out, p.ID)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, nil
}
