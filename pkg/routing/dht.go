package routing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/config"
)

// What a node announces on the DHT is only what another node asks for
// first: image roots and the roots of their blobs, never every block (a
// blob's blocks come from whoever provided its root; docs/benchmarks.md
// measures the difference).

// reprovideInterval renews provider records before they expire (48 h).
const reprovideInterval = 12 * time.Hour

// provideTimeout bounds one announcement.
const provideTimeout = time.Minute

// DHT is a node's Kademlia DHT (libp2p's, which bitswap also asks for
// providers) and the queue of what it announces.
type DHT struct {
	*dht.IpfsDHT
	mode     string
	announce bool
	held     func(context.Context) ([]cid.Cid, error)
	log      *slog.Logger

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

// DHTOptions configure a DHT.
type DHTOptions struct {
	// Mode is config.DHTLAN or config.DHTWAN.
	Mode string
	// Announce makes the node a DHT server that announces what it holds:
	// the daemon does; short-lived commands only ask.
	Announce bool
	// Held lists what the node holds, announced again every
	// reprovideInterval; nil announces only what Provide is given.
	Held func(context.Context) ([]cid.Cid, error)
	// Store keeps the DHT's records.
	Store ds.Batching
	Log   *slog.Logger
}

// NewDHT joins the DHT of opts.Mode on h.
func NewDHT(h host.Host, opts DHTOptions) (*DHT, error) {
	dopts := []dht.Option{dht.Mode(dht.ModeClient)}
	if opts.Store != nil {
		dopts = append(dopts, dht.Datastore(opts.Store))
	}
	if opts.Announce {
		dopts[0] = dht.Mode(dht.ModeServer)
	}
	switch opts.Mode {
	case config.DHTLAN:
		dopts = append(dopts,
			dht.ProtocolExtension("/lan"),
			dht.QueryFilter(dht.PrivateQueryFilter),
			dht.RoutingTableFilter(dht.PrivateRoutingTableFilter))
	case config.DHTWAN:
	default:
		return nil, fmt.Errorf("DHT mode %q: want %q or %q", opts.Mode, config.DHTLAN, config.DHTWAN)
	}
	d, err := dht.New(h, dopts...)
	if err != nil {
		return nil, fmt.Errorf("start the %s DHT: %w", opts.Mode, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &DHT{
		IpfsDHT: d, mode: opts.Mode, announce: opts.Announce, held: opts.Held, log: opts.Log,
		queued: map[cid.Cid]bool{}, wake: make(chan struct{}, 1), stop: cancel, stopped: make(chan struct{}),
	}
	if out.log == nil {
		out.log = slog.New(slog.DiscardHandler)
	}
	if !opts.Announce {
		close(out.stopped)
		return out, nil
	}
	go out.announceLoop(ctx)
	return out, nil
}

// Close stops announcing and leaves the DHT.
func (d *DHT) Close() error {
	d.stop()
	<-d.stopped
	return d.IpfsDHT.Close()
}

// Provide queues cs to announce; it does nothing unless the node announces.
func (d *DHT) Provide(cs ...cid.Cid) {
	if !d.announce {
		return
	}
	d.mu.Lock()
	for _, c := range cs {
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

// FindProviders asks the DHT for holders of c.
func (d *DHT) FindProviders(ctx context.Context, c cid.Cid, max int) <-chan peer.AddrInfo {
	return d.IpfsDHT.FindProvidersAsync(ctx, c, max)
}

// announceLoop announces what is queued, once the routing table has
// peers, and everything held again every reprovideInterval.
func (d *DHT) announceLoop(ctx context.Context) {
	defer close(d.stopped)
	d.provideHeld(ctx)
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
			d.provideHeld(ctx)
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
				d.log.Debug("announcing on the DHT failed; trying again", "cid", c, "err", err)
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

// provideHeld queues everything the node holds.
func (d *DHT) provideHeld(ctx context.Context) {
	if d.held == nil {
		return
	}
	cs, err := d.held(ctx)
	if err != nil {
		d.log.Warn("listing what to announce", "err", err)
		return
	}
	d.Provide(cs...)
}

// DHTStat is what a node announced on the DHT.
type DHTStat struct {
	Mode        string
	Peers       int // in the routing table
	Provided    uint64
	ProvideTime time.Duration
	Failed      uint64
	Queued      int
}

// Stat reports the DHT's state.
func (d *DHT) Stat() DHTStat {
	d.mu.Lock()
	queued := len(d.queue)
	d.mu.Unlock()
	return DHTStat{
		Mode: d.mode, Peers: d.RoutingTable().Size(),
		Provided: d.provided.Load(), ProvideTime: time.Duration(d.provideTime.Load()),
		Failed: d.failed.Load(), Queued: queued,
	}
}
