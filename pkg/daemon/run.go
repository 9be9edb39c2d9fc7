package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoal-ipfs/shoal/internal/httpserve"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/group"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
	"golang.org/x/sync/errgroup"
)

// RunOptions are the servers of a running daemon.
type RunOptions struct {
	// Socket is the API socket for shoal commands.
	Socket string
	// Registry is the OCI registry, which also serves /metrics; an empty
	// Listen turns both off.
	Registry config.RegistryConfig
	// Containerd is the containerd plugins' config, its paths absolute;
	// an empty Socket turns them off.
	Containerd config.ContainerdConfig
	// Mount is how lazy layers keep what they read, its paths absolute.
	Mount config.MountConfig
	// Group makes the daemon a member of a group, its paths absolute; an
	// empty Name is none.
	Group config.GroupConfig
	// MetricsListen serves /metrics, /healthz and /readyz on a listener
	// of their own (host:port); empty serves none.
	MetricsListen string
	// Mirrors are the registries the registry mirrors; none without it.
	Mirrors []upstream.Endpoint
	// MirrorWholeOnly turns off swarming while pulling (mirror.Peers).
	MirrorWholeOnly bool
	Log             *slog.Logger
}

// Run serves n on the API socket and, if asked, the OCI registry and its
// metrics, until ctx ends or a server fails.
func Run(ctx context.Context, n *node.Node, opts RunOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sopts := api.ServerOptions{Log: log}
	var grp *group.Group
	if cfg := opts.Group; cfg.Name != "" {
		// Before any server starts: a member without its key is refused.
		key, err := group.LoadKey(cfg.Key)
		if err != nil {
			return fmt.Errorf("group %s: %w", cfg.Name, err)
		}
		if grp, err = group.New(n, cfg.Name, n.Metadata("group/"+cfg.Name), group.Options{Grace: cfg.Grace.Duration, FetchTimeout: opts.Registry.FetchTimeout.Duration, Key: key, Log: log}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newNodeCollector(n), buildInfoCollector{})
	// Which images containerd pulls are on IPFS: those named ipfs/CID,
	// and, with the registry on, those pushed to it.
	find := func(_ context.Context, name string, _ digest.Digest) (cid.Cid, bool) { return registry.IPFSRoot(name) }
	checks := []readyCheck{storeReady(n), swarmReady(n)}
	if cfg := opts.Registry; cfg.Listen != "" {
		var ropts []registry.Option
		if len(opts.Mirrors) > 0 {
			m, err := openMirror(n, opts.Mirrors, opts.MirrorWholeOnly, cfg, metrics, log)
			if err != nil {
				return err
			}
			defer m.Close()
			ropts = append(ropts, registry.WithMirror(m))
			sopts.Mirror = m
		}
		rg, addr, err := startRegistry(ctx, g, n, n.Metadata("registry"), filepath.Join(n.Home(), "registry-uploads"), cfg, metrics, log, ropts...)
		if err != nil {
			return err
		}
		find, sopts.Registry = rg.RootOf, addr
		checks = append(checks, registryReady(addr, cfg.TLSCert != ""))
	}
	if cfg := opts.Containerd; cfg.Socket != "" {
		p, err := openContainerd(ctx, n, cfg, opts.Mount, find, metrics, log)
		if err != nil {
			cancel()
			_ = g.Wait()
			return err
		}
		sopts.Containerd = cfg.Socket
		checks = append(checks, socketReady("containerd-plugins", cfg.Socket))
		log.Info("containerd plugins serving", "socket", cfg.Socket, "snapshotter", p.sn != nil, "snapshots", cfg.Root)
		g.Go(func() error { return p.serve(ctx) })
	}
	if grp != nil {
		sopts.Group = grp
		metrics.MustRegister(groupCollector{grp})
		log.Info("group member", "group", grp.Name(), "protocol", group.Protocol(grp.Name()), "key", opts.Group.Key)
		g.Go(func() error { return grp.Run(ctx) })
	}
	if opts.MetricsListen != "" {
		status := &statusPage{n: n, mirror: sopts.Mirror, group: grp, metrics: metrics}
		if _, err := startHealth(ctx, g, opts.MetricsListen, metrics, checks, status, log); err != nil {
			cancel()
			_ = g.Wait()
			return err
		}
	}
	srv := api.NewServer(n, sopts)
	g.Go(func() error { return srv.Serve(ctx, opts.Socket) })
	return g.Wait()
}

// checkExposure refuses a registry that anyone on the network could push
// to: beyond loopback, credentials are required.
func checkExposure(cfg config.RegistryConfig) error {
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return fmt.Errorf("registry address %q: %w", cfg.Listen, err)
	}
	if !isLoopback(cfg.Listen) && cfg.Htpasswd == "" {
		return fmt.Errorf("registry address %q is not loopback: set [registry] htpasswd (a file of htpasswd -B entries) so that pushes need credentials", cfg.Listen)
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// nodeCollector reports what the node fetched from peers and read
// locally, its swarm and what its stores take on disk.
type nodeCollector struct {
	n      *node.Node
	stored *storedBytes
}

func newNodeCollector(n *node.Node) nodeCollector {
	return nodeCollector{n: n, stored: &storedBytes{n: n}}
}

// storedBytes keeps the stores' size for a while: counting it walks their
// directories, too much for every scrape.
type storedBytes struct {
	n     *node.Node
	mu    sync.Mutex
	at    time.Time
	bytes int64
}

const storedBytesAge = 30 * time.Second

func (s *storedBytes) get(ctx context.Context) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.at.IsZero() && time.Since(s.at) < storedBytesAge {
		return s.bytes, true
	}
	b, err := s.n.StoredBytes(ctx)
	if err != nil {
		return 0, false
	}
	s.bytes, s.at = b, time.Now()
	return b, true
}

var (
	fetchedBlocksDesc = prometheus.NewDesc("shoal_fetched_blocks_total", "Blocks received from peers, by protocol.", []string{"protocol"}, nil)
	fetchedBytesDesc  = prometheus.NewDesc("shoal_fetched_bytes_total", "Bytes of blocks received from peers, by protocol.", []string{"protocol"}, nil)
	blobReadsDesc     = prometheus.NewDesc("shoal_blob_reads_total", "Blobs read, by whether they were stored here when asked for (local) or came from peers.", []string{"from"}, nil)
	servedBlocksDesc  = prometheus.NewDesc("shoal_served_blocks_total", "Single blocks served to peers fetching from many peers at once.", nil, nil)
	dhtPeersDesc      = prometheus.NewDesc("shoal_dht_peers", "Peers in the DHT routing table.", nil, nil)
	dhtProvidedDesc   = prometheus.NewDesc("shoal_dht_provided_total", "CIDs announced on the DHT (image and blob roots, group rendezvous).", nil, nil)
	dhtProvideDesc    = prometheus.NewDesc("shoal_dht_provide_seconds_total", "Time spent announcing on the DHT.", nil, nil)
	dhtQueuedDesc     = prometheus.NewDesc("shoal_dht_provide_queue", "CIDs waiting to be announced.", nil, nil)
	peersDesc         = prometheus.NewDesc("shoal_peers_connected", "Peers the swarm is connected to now.", nil, nil)
	swarmInDesc       = prometheus.NewDesc("shoal_swarm_received_bytes_total", "Bytes received over the swarm, by protocol.", []string{"protocol"}, nil)
	swarmOutDesc      = prometheus.NewDesc("shoal_swarm_sent_bytes_total", "Bytes sent over the swarm (served to peers), by protocol.", []string{"protocol"}, nil)
	storedDesc        = prometheus.NewDesc("shoal_stored_bytes", "Disk space the node's stores take (blocks, packs, records), counted at most every 30 s.", nil, nil)
)

func (nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fetchedBlocksDesc
	ch <- fetchedBytesDesc
	ch <- blobReadsDesc
	ch <- servedBlocksDesc
	ch <- dhtPeersDesc
	ch <- dhtProvidedDesc
	ch <- dhtProvideDesc
	ch <- dhtQueuedDesc
	ch <- peersDesc
	ch <- swarmInDesc
	ch <- swarmOutDesc
	ch <- storedDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	if b, ok := c.stored.get(context.Background()); ok {
		ch <- prometheus.MustNewConstMetric(storedDesc, prometheus.GaugeValue, float64(b))
	}
	if sw, err := c.n.SwarmStat(); err == nil {
		ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(sw.Peers))
		for p, st := range sw.ByProtocol {
			ch <- prometheus.MustNewConstMetric(swarmInDesc, prometheus.CounterValue, float64(st.Received), p)
			ch <- prometheus.MustNewConstMetric(swarmOutDesc, prometheus.CounterValue, float64(st.Sent), p)
		}
	}
	s, err := c.n.FetchStat()
	if err != nil {
		return // offline: nothing fetched
	}
	counter := func(d *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(fetchedBlocksDesc, s.BitswapBlocks, "bitswap")
	counter(fetchedBlocksDesc, s.GatewayBlocks, "gateway")
	counter(fetchedBytesDesc, s.BitswapBytes, "bitswap")
	counter(fetchedBytesDesc, s.GatewayBytes, "gateway")
	counter(blobReadsDesc, s.LocalReads, "local")
	counter(blobReadsDesc, s.PeerReads, "peers")
	ch <- prometheus.MustNewConstMetric(servedBlocksDesc, prometheus.CounterValue, float64(s.GatewayServed))
	if d := c.n.DHTStat(); d.Mode != config.DHTOff {
		ch <- prometheus.MustNewConstMetric(dhtPeersDesc, prometheus.GaugeValue, float64(d.Peers))
		ch <- prometheus.MustNewConstMetric(dhtProvidedDesc, prometheus.CounterValue, float64(d.Provided))
		ch <- prometheus.MustNewConstMetric(dhtProvideDesc, prometheus.CounterValue, d.ProvideTime.Seconds())
		ch <- prometheus.MustNewConstMetric(dhtQueuedDesc, prometheus.GaugeValue, float64(d.Queued))
	}
}

// ServeMetrics serves collectors, with Go's runtime metrics, as Prometheus
// metrics on addr/metrics until stop is called or ctx ends.
func ServeMetrics(ctx context.Context, addr string, cs ...prometheus.Collector) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = httpserve.Until(ctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, l)
	}()
	return func() { cancel(); <-done }, nil
}

// groupCollector reports the daemon's view of its group.
type groupCollector struct{ g *group.Group }

var (
	groupMembersDesc = prometheus.NewDesc("shoal_group_members", "Members of the daemon's group it counts, itself included.", []string{"group"}, nil)
	groupKeptDesc    = prometheus.NewDesc("shoal_group_kept_bytes", "Bytes of sharded images' chunks this member keeps.", []string{"group"}, nil)
)

func (groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- groupMembersDesc
	ch <- groupKeptDesc
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	_, kept := c.g.Kept()
	ch <- prometheus.MustNewConstMetric(groupMembersDesc, prometheus.GaugeValue, float64(len(c.g.Members())), c.g.Name())
	ch <- prometheus.MustNewConstMetric(groupKeptDesc, prometheus.GaugeValue, float64(kept), c.g.Name())
}
