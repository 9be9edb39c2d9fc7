// Package node is shoal's embedded IPFS node: a blockstore on disk, pins,
// garbage collection, and, when online, a libp2p host that exchanges blocks
// with peers over bitswap.
package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/exchange"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/peering"
	pinner "github.com/ipfs/boxo/pinning/pinner"
	"github.com/ipfs/boxo/pinning/pinner/dspinner"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	flatfs "github.com/ipfs/go-ds-flatfs"
	pebbleds "github.com/ipfs/go-ds-pebble"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	lp2prouting "github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/packs"
	"github.com/shoal-ipfs/shoal/pkg/retrieval"
	"github.com/shoal-ipfs/shoal/pkg/routing"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Options change how a node opens; the zero value opens offline with the
// config file's settings.
type Options struct {
	// Online starts the libp2p host and bitswap.
	Online bool
	// Listen replaces the config's swarm addresses when not nil. Commands
	// other than the daemon listen on port 0 so they never collide with it.
	Listen []string
	// Peers are connected in addition to the config's.
	Peers []string
	// NoMDNS turns mDNS off whatever the config says.
	NoMDNS bool
	// Announce makes the node a DHT server that announces the images it
	// holds: the daemon does; short-lived commands only ask.
	Announce bool
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// LockWait is how long to wait for another process to release the
	// store before giving up.
	LockWait time.Duration
}

// The embedded node is a whole store: every role of package store.
var (
	_ store.Adder      = (*Node)(nil)
	_ store.Reader     = (*Node)(nil)
	_ store.ReaderAt   = (*Node)(nil)
	_ store.Pinner     = (*Node)(nil)
	_ store.Catalog    = (*Node)(nil)
	_ store.Holder     = (*Node)(nil)
	_ store.Collector  = (*Node)(nil)
	_ store.Verifier   = (*Node)(nil)
	_ store.Identifier = (*Node)(nil)
)

// Node is an open shoal store, online or not.
type Node struct {
	home   string
	cfg    config.Config
	layout blob.Layout
	log    *slog.Logger

	lock      *os.File
	meta      ds.Batching  // pins, image records
	stores    []io.Closer  // what Close closes
	syncLoose func() error // makes the loose block store's new blocks durable
	packs     *packs.Store // whole blobs' leaves, over the loose blocks
	bstore    blockstore.Blockstore
	spare     *spare
	// finder finds the peers behind addresses given without IDs.
	finder *finder
	// priv is the node's identity, psk its private network's key (nil
	// in the public one): what finder needs to speak to peers.
	priv crypto.PrivKey
	psk  pnet.PSK
	// bandwidth counts the swarm's bytes in and out, by protocol.
	bandwidth *metrics.BandwidthCounter
	pins      pinner.Pinner
	bserv     blockservice.BlockService
	dag       ipld.DAGService
	// offline reads the local store only: GC, the pinner and the haves
	// a node tells its peers must never fetch.
	offline ipld.DAGService

	host      host.Host
	bswap     *bitswap.Bitswap
	peering   *peering.PeeringService
	mdns      io.Closer
	mdnsFound *mdnsNotifee
	fetch     *retrieval.Retriever // nil when offline
	bad       *retrieval.BadPeers
	dht       *routing.DHT
	// private is whether the swarm is closed by a swarm key.
	private bool
	pinMu   sync.Mutex // image records and their pins change together

	closeOnce sync.Once
	closeErr  error

	corrupt atomic.Uint64 // blocks found corrupt and dropped
}

// Open opens the store under home, taking its lock, and goes online if asked.
func Open(ctx context.Context, home string, opts Options) (_ *Node, err error) {
	priv, err := config.LoadIdentity(home)
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadConfig(home)
	if err != nil {
		return nil, err
	}
	layout, err := blob.ParseLayout(cfg.Import.Layout)
	if err != nil {
		return nil, err
	}
	n := &Node{home: home, cfg: cfg, layout: layout, log: opts.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.lock, err = lockRepo(home, opts.LockWait); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.openStores(ctx); err != nil {
		return nil, err
	}
	if !opts.Online {
		n.bserv = blockservice.New(n.bstore, nil)
		n.dag = merkledag.NewDAGService(n.bserv)
		return n, nil
	}
	listen := cfg.Swarm.Listen
	if opts.Listen != nil {
		listen = opts.Listen
	}
	n.bad = retrieval.NewBadPeers()
	n.bandwidth = metrics.NewBandwidthCounter()
	allow, err := config.ParseAllowlist(cfg.Swarm.Allow)
	if err != nil {
		return nil, err
	}
	psk, err := loadSwarmKey(config.UnderHome(home, cfg.Swarm.Key))
	if err != nil {
		return nil, err
	}
	n.priv, n.psk = priv, psk
	rm, err := resourceManager()
	if err != nil {
		return nil, err
	}
	hostOpts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.DisableMetrics(),
		libp2p.BandwidthReporter(n.bandwidth),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionGater(swarmGater{bad: n.bad, allow: allow}),
		// Without SO_REUSEPORT, a second node on a port in use fails to
		// listen rather than share the port and take half its connections.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Muxer(yamux.ID, muxer()),
	}
	n.private = psk != nil
	if psk != nil {
		hostOpts = append(hostOpts, libp2p.PrivateNetwork(psk))
		if tcpOnly := withoutQUIC(listen); len(tcpOnly) < len(listen) {
			n.log.Info("private network: listening on TCP only (libp2p private networks do not run over QUIC)")
			listen = tcpOnly
		}
	} else {
		hostOpts = append(hostOpts, libp2p.Transport(quic.NewTransport), libp2p.QUICReuse(quicreuse.NewConnManager, quicreuse.DisableReuseport()))
	}
	n.host, err = libp2p.New(append(hostOpts, libp2p.ListenAddrStrings(listen...))...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host on %v: %w (is another process, another shoal daemon say, on that port?)", listen, err)
	}
	if err := checkListening(listen, n.host.Network().ListenAddresses()); err != nil {
		return nil, err
	}
	if err := n.startDHT(cfg.Swarm.DHT, opts.Announce); err != nil {
		return nil, err
	}
	var providers lp2prouting.ContentDiscovery
	if n.dht != nil {
		providers = n.dht.IpfsDHT
	}
	n.bswap = bitswap.New(ctx, bsnet.NewFromIpfsHost(n.host), providers, n.bstore, bitswapTuning()...)
	n.bserv = blockservice.New(n.bstore, n.bswap)
	n.dag = merkledag.NewDAGService(n.bserv)

	n.fetch = retrieval.New(retrieval.Options{Host: n.host, Store: n.packs, DAG: n.dag, Router: n.Router(), Bad: n.bad, Log: n.log})
	n.peering = peering.NewPeeringService(n.host)
	given, err := ParsePeerAddrs(append(append([]string{}, cfg.Swarm.Peers...), opts.Peers...))
	if err != nil {
		return nil, err
	}
	peers := given.Known
	for _, p := range peers {
		n.peering.AddPeer(p)
	}
	if err := n.peering.Start(); err != nil {
		return nil, err
	}
	if len(given.Find) > 0 {
		n.finder = newFinder(n, given.Find)
		n.finder.start(ctx)
	}
	if cfg.Swarm.MDNS && !opts.NoMDNS {
		found := newMDNSNotifee(n)
		svc := mdns.NewMdnsService(n.host, "", found)
		if err := svc.Start(); err != nil {
			n.log.Warn("mDNS discovery unavailable", "err", err)
		} else {
			n.mdns, n.mdnsFound = svc, found
		}
	}
	// Static peers are connected before the command goes on, so that a
	// pull asks them at once instead of after the peering service's backoff.
	if err := n.Connect(ctx, peers...); err != nil {
		n.log.Warn("static peer unreachable", "err", err)
	}
	return n, nil
}

// bitswapTuning lets one peer keep many blocks in flight: image pulls fetch
// whole DAGs, and loopback or LAN links are far faster than bitswap's
// defaults assume.
func bitswapTuning() []bitswap.Option {
	return []bitswap.Option{
		bitswap.EngineBlockstoreWorkerCount(128),
		bitswap.TaskWorkerCount(16),
		bitswap.EngineTaskWorkerCount(16),
		bitswap.MaxOutstandingBytesPerPeer(32 << 20),
		bitswap.ProviderSearchDelay(time.Second),
	}
}

// syncFS flushes the file system of new stores; a test counts the calls.
var syncFS = durable.SyncFS

func (n *Node) openStores(ctx context.Context) error {
	blocksDir := map[string]string{"flatfs": "blocks", "pebble": "blocks-pebble"}[n.cfg.Datastore.Blocks]
	created := false
	for _, dir := range []string{"datastore", blocksDir, "packs"} {
		if _, err := os.Stat(filepath.Join(n.home, dir)); errors.Is(err, fs.ErrNotExist) {
			created = true
		}
	}
	meta, err := pebbleds.NewDatastore(filepath.Join(n.home, "datastore"))
	if err != nil {
		return fmt.Errorf("open datastore: %w", err)
	}
	n.meta = meta
	n.stores = append(n.stores, meta)
	var blocks ds.Batching
	switch n.cfg.Datastore.Blocks {
	case "flatfs":
		dir := filepath.Join(n.home, blocksDir)
		if err := repairSharding(dir, n.log); err != nil {
			return err
		}
		ff, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), n.cfg.Datastore.Sync)
		if err != nil {
			return fmt.Errorf("open block store: %w", err)
		}
		n.stores = append(n.stores, ff)
		written, err := newWrittenFlatfs(ff, dir)
		if err != nil {
			return fmt.Errorf("open block store: %w", err)
		}
		blocks = written
		n.syncLoose = written.written.Sync
	case "pebble":
		// Without a WAL, blocks go to memtables and reach the disk as large
		// sorted files. Nothing refers to a block until PinImage has flushed
		// them, so a crash loses only blocks that no image record names.
		pdb, err := pebbleds.NewDatastore(filepath.Join(n.home, blocksDir), pebbleds.WithPebbleOpts(&pebble.Options{
			DisableWAL:                  true,
			MemTableSize:                64 << 20,
			MemTableStopWritesThreshold: 4,
		}))
		if err != nil {
			return fmt.Errorf("open block store: %w", err)
		}
		blocks = pdb
		n.stores = append(n.stores, pdb)
		n.syncLoose = pdb.DB.Flush // a flush writes and syncs pebble's tables
	}
	n.spare = newSpare()
	n.packs, err = packs.New(blockstore.NewBlockstore(blocks, blockstore.NoPrefix()), meta, filepath.Join(n.home, "packs"), n.cfg.Datastore.Sync,
		packs.OnWrite(n.spare.wrote), packs.OnCorrupt(n.noteCorrupt))
	if err != nil {
		return err
	}
	n.bstore = n.packs
	// New stores' files (flatfs's SHARDING, pebble's first tables) reach
	// the disk before anything is stored in them. Stores opened again need
	// nothing: a syncfs at every open also wrote whatever else on the file
	// system was dirty, another program's 95 MB say, before a pull began.
	if created {
		if err := syncFS(n.home); err != nil {
			return err
		}
	}
	n.offline = merkledag.NewDAGService(blockservice.New(n.bstore, nil))
	n.pins, err = dspinner.New(ctx, meta, n.offline)
	if err != nil {
		return fmt.Errorf("open pins: %w", err)
	}
	return nil
}

// Close stops networking and closes the store, releasing its lock. Closing
// again does nothing.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	var errs []error
	if n.mdns != nil {
		errs = append(errs, n.mdns.Close())
		n.mdnsFound.close()
	}
	if n.finder != nil {
		n.finder.close()
	}
	if n.peering != nil {
		n.peering.Stop()
	}
	if n.fetch != nil {
		errs = append(errs, n.fetch.Close())
	}
	if n.bswap != nil {
		errs = append(errs, n.bswap.Close())
	}
	if n.dht != nil {
		errs = append(errs, n.dht.Close())
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	for _, st := range n.stores {
		errs = append(errs, st.Close())
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
	}
	return errors.Join(errs...)
}

// Home is the node's state directory.
func (n *Node) Home() string { return n.home }

// config.Config is the node's configuration as loaded.
func (n *Node) Config() config.Config { return n.cfg }

// checkListening finds each address asked for among those listening: libp2p
// goes on with the others when one cannot listen (its port taken).
func checkListening(asked []string, listening []multiaddr.Multiaddr) error {
	for _, a := range asked {
		want, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			return err
		}
		found := false
		for _, l := range listening {
			if sameListener(want, l) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("swarm address %s does not listen: its port is taken, by another shoal daemon perhaps (another home needs another port: shoal init --listen, or [swarm] listen in config.toml)", a)
		}
	}
	return nil
}

// sameListener tells whether listening serves the address asked for: the
// same protocols, IP and port (any port for port 0).
func sameListener(asked, listening multiaddr.Multiaddr) bool {
	ap, lp := asked.Protocols(), listening.Protocols()
	if len(ap) != len(lp) {
		return false
	}
	for i := range ap {
		if ap[i].Code != lp[i].Code {
			return false
		}
		av, _ := asked.ValueForProtocol(ap[i].Code)
		lv, _ := listening.ValueForProtocol(ap[i].Code)
		switch ap[i].Code {
		case multiaddr.P_TCP, multiaddr.P_UDP:
			if av != "0" && av != lv {
				return false
			}
		case multiaddr.P_IP4, multiaddr.P_IP6:
			if av != lv && av != "0.0.0.0" && av != "::" {
				return false
			}
		}
	}
	return true
}

// Private tells whether the node's swarm is closed by a swarm key: only
// its holders connect.
func (n *Node) Private() bool { return n.private }

// Host is the libp2p host, nil when offline.
func (n *Node) Host() host.Host { return n.host }

// DAG is the node's DAG service: local blocks, and peers' when online.
func (n *Node) DAG() ipld.DAGService { return n.dag }

// Blockstore is the node's local block storage.
func (n *Node) Blockstore() blockstore.Blockstore { return n.bstore }

// Exchange is the block exchange, nil when offline.
func (n *Node) Exchange() exchange.Interface {
	if n.bswap == nil {
		return nil
	}
	return n.bswap
}

// FetchStat counts what this node received from peers.
type FetchStat struct {
	BitswapBlocks, BitswapBytes uint64
	GatewayBlocks, GatewayBytes uint64
	// LocalReads and PeerReads count blobs read (Cat) that were stored
	// here when asked for, and those that had to come from peers.
	LocalReads, PeerReads uint64
	// GatewayServed counts single blocks this node served to peers
	// fetching from many peers at once.
	GatewayServed uint64
}

// FetchStat reports the blocks received from peers; the node must be online.
func (n *Node) FetchStat() (FetchStat, error) {
	if n.bswap == nil {
		return FetchStat{}, ErrOffline
	}
	bs, err := n.bswap.Stat()
	if err != nil {
		return FetchStat{}, err
	}
	rs := n.fetch.Stat()
	return FetchStat{
		BitswapBlocks: bs.BlocksReceived, BitswapBytes: bs.DataReceived,
		GatewayBlocks: rs.BlocksReceived, GatewayBytes: rs.BytesReceived,
		GatewayServed: rs.Served,
		LocalReads:    rs.LocalReads, PeerReads: rs.PeerReads,
	}, nil
}

// Connect dials peers; a failure to reach one does not stop the others.
func (n *Node) Connect(ctx context.Context, peers ...peer.AddrInfo) error {
	if n.host == nil {
		return ErrOffline
	}
	var errs []error
	for _, p := range peers {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := n.host.Connect(cctx, p); err != nil {
			errs = append(errs, fmt.Errorf("connect %s: %w", p.ID, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// AddPeer connects to a peer and keeps it connected.
func (n *Node) AddPeer(ctx context.Context, p peer.AddrInfo) error {
	if n.peering == nil {
		return ErrOffline
	}
	n.peering.AddPeer(p)
	return n.Connect(ctx, p)
}

// AddPeerAddrs connects to peers, given with or without IDs
// (ParsePeerAddrs), and keeps them connected.
func (n *Node) AddPeerAddrs(ctx context.Context, addrs []string) error {
	given, err := ParsePeerAddrs(addrs)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range given.Known {
		errs = append(errs, n.AddPeer(ctx, p))
	}
	if len(given.Find) > 0 {
		if n.peering == nil {
			return ErrOffline
		}
		f := newFinder(n, given.Find)
		defer f.close()
		// Found once: the daemon keeps what it found connected, but only
		// its own configured names are resolved again.
		f.round(ctx)
		if f.count() == 0 {
			errs = append(errs, fmt.Errorf("no peer found at %v", given.Find))
		}
	}
	return errors.Join(errs...)
}

// ParsePeers parses peer multiaddrs that end in /p2p/ID.
func ParsePeers(addrs []string) ([]peer.AddrInfo, error) {
	var mas []multiaddr.Multiaddr
	for _, a := range addrs {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", a, err)
		}
		mas = append(mas, ma)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("peers %v: %w (a peer address ends in /p2p/PEER-ID)", addrs, err)
	}
	return infos, nil
}

// ParsePeer parses a peer multiaddr that ends in /p2p/ID.
func ParsePeer(addr string) (peer.AddrInfo, error) {
	ps, err := ParsePeers([]string{addr})
	if err != nil {
		return peer.AddrInfo{}, err
	}
	return ps[0], nil
}

// mdnsNotifee connects to the peers mDNS finds. mDNS tells of a peer
// once, so a connection that fails (the peer still starting, a loaded
// machine) is tried a few more times, with pauses, until the node closes.
type mdnsNotifee struct {
	n      *Node
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newMDNSNotifee(n *Node) *mdnsNotifee {
	ctx, cancel := context.WithCancel(context.Background())
	return &mdnsNotifee{n: n, ctx: ctx, cancel: cancel}
}

// mdnsAttempts bounds the connections tried to one peer mDNS found.
const mdnsAttempts = 4

func (m *mdnsNotifee) HandlePeerFound(p peer.AddrInfo) {
	if p.ID == m.n.host.ID() {
		return
	}
	m.wg.Go(func() {
		pause := time.Second
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			err := m.n.host.Connect(ctx, p)
			cancel()
			if err == nil {
				return
			}
			m.n.log.Debug("mDNS peer unreachable", "peer", p.ID, "attempt", attempt, "err", err)
			if attempt == mdnsAttempts {
				return
			}
			select {
			case <-time.After(pause):
				pause *= 2
			case <-m.ctx.Done():
				return
			}
		}
	})
}

// close stops the connections being tried and waits for them.
func (m *mdnsNotifee) close() {
	m.cancel()
	m.wg.Wait()
}

// ID returns the node's peer ID and, when online, its dialable addresses.
func (n *Node) ID(context.Context) (store.Identity, error) {
	id, err := config.PeerID(n.home)
	if err != nil {
		return store.Identity{}, err
	}
	out := store.Identity{ID: id.String(), Addresses: []string{}}
	if n.host != nil {
		for _, a := range n.host.Addrs() {
			out.Addresses = append(out.Addresses, a.String()+"/p2p/"+id.String())
		}
	} else {
		for _, a := range n.cfg.Swarm.Listen {
			out.Listen = append(out.Listen, a+"/p2p/"+id.String())
		}
	}
	return out, nil
}

// Add stores r as a UnixFS file in the configured layout, its leaves in a
// pack of their own.
func (n *Node) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	return n.addPacked(ctx, func(dag ipld.DAGService) (cid.Cid, error) {
		return blob.Add(ctx, dag, r, n.layout)
	})
}

// AddHashing is Add that also feeds r's bytes to whole, in the pass that
// hashes the leaves (blob.AddHashing).
func (n *Node) AddHashing(ctx context.Context, r io.Reader, whole *sha256x.Stream) (cid.Cid, error) {
	return n.addPacked(ctx, func(dag ipld.DAGService) (cid.Cid, error) {
		return blob.AddHashing(ctx, dag, r, n.layout, whole)
	})
}

// AddChunks stores chunks as one UnixFS file, each chunk a block of its
// own (blob.AddChunks).
func (n *Node) AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error) {
	return n.addPacked(ctx, func(dag ipld.DAGService) (cid.Cid, error) {
		return blob.AddChunks(ctx, dag, chunks, n.layout.MaxLinks)
	})
}

// addPacked runs an import whose leaves go to a new pack, in the order the
// importer makes them, which is the file's. What is added is local and
// most likely cached already, so the pack is written around the page
// cache when that is faster (packs.DirectWhenFaster).
func (n *Node) addPacked(ctx context.Context, add func(ipld.DAGService) (cid.Cid, error)) (cid.Cid, error) {
	w, err := n.packs.NewWriter(packs.DirectWhenFaster())
	if err != nil {
		return cid.Undef, err
	}
	defer w.Close()
	root, err := add(packingDAG{DAGService: n.dag, w: w})
	if err != nil {
		return cid.Undef, err
	}
	if err := w.Finish(ctx, root); err != nil {
		return cid.Undef, err
	}
	return root, nil
}

// packingDAG stores the blocks added through it with a pack writer.
type packingDAG struct {
	ipld.DAGService
	w *packs.Writer
}

func (d packingDAG) Add(ctx context.Context, nd ipld.Node) error {
	return d.w.Add(ctx, []blocks.Block{nd})
}

func (d packingDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	bs := make([]blocks.Block, len(nds))
	for i, nd := range nds {
		bs[i] = nd
	}
	return d.w.Add(ctx, bs)
}

// BlobFile returns the file holding the whole blob root byte for byte, if
// the node stored it as a pack (packs.Store.BlobFile).
func (n *Node) BlobFile(ctx context.Context, root cid.Cid) (path string, size int64, ok bool, err error) {
	return n.packs.BlobFile(ctx, root)
}

// resourceManager is libp2p's default resource manager without its
// statistics. Nothing reads libp2p's Prometheus metrics (shoal's /metrics
// has a registry of its own), and the statistics cost a trace event, a
// formatted time stamp under a lock, for every buffer a stream reserves:
// 3% of a busy node's CPU in the scale benchmark.
func resourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()), rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, fmt.Errorf("libp2p resource manager: %w", err)
	}
	return rm, nil
}

// repairSharding rewrites a flatfs store's SHARDING file that a power cut
// left empty (it was written before shoal made new stores durable at
// once): the store cannot open without it, and shoal shards one way only.
func repairSharding(dir string, log *slog.Logger) error {
	p := filepath.Join(dir, "SHARDING")
	data, err := os.ReadFile(p)
	if err != nil || len(bytes.TrimSpace(data)) > 0 {
		return nil // a new store, or a sound one
	}
	log.Warn("store: rewriting an empty flatfs SHARDING file, lost in a crash", "path", p)
	return config.WriteFileDurably(p, []byte(flatfs.NextToLast(2).String()+"\n"), 0o644)
}

// noteCorrupt logs a block found corrupt on reading, which the store
// dropped so that it is fetched again.
func (n *Node) noteCorrupt(c cid.Cid, err error) {
	n.corrupt.Add(1)
	n.log.Error("store: dropped a corrupt block; it is fetched again when next needed", "block", c, "err", err)
}
