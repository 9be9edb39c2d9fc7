package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"golang.org/x/sync/errgroup"
)

// RunOptions are the servers of a running daemon.
type RunOptions struct {
	// Socket is the API socket for shoal commands.
	Socket string
	// RegistryListen is the registry's host:port, which also serves
	// /metrics; empty turns both off.
	RegistryListen string
	// FetchTimeout bounds how long a registry request waits for peers.
	FetchTimeout time.Duration
	Log          *slog.Logger
}

// Run serves n on the API socket and, if asked, the OCI registry and its
// metrics, until ctx ends or a server fails.
func Run(ctx context.Context, n *node.Node, opts RunOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := NewServer(n, log)
	g, ctx := errgroup.WithContext(ctx)
	if opts.RegistryListen != "" {
		l, err := listenRegistry(opts.RegistryListen)
		if err != nil {
			return err
		}
		metrics := prometheus.NewRegistry()
		metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), nodeCollector{n})
		rg, err := registry.New(n, n.Metadata("registry"), filepath.Join(n.Home(), "registry-uploads"),
			registry.WithLogger(log), registry.WithFetchTimeout(opts.FetchTimeout), registry.WithMetrics(metrics))
		if err != nil {
			l.Close()
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/", rg)
		mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
		srv.registry = l.Addr().String()
		log.Info("registry listening", "address", srv.registry, "metrics", "http://"+srv.registry+"/metrics")
		g.Go(func() error { rg.Run(ctx); return nil })
		g.Go(func() error { return serveUntil(ctx, hs, l) })
	}
	g.Go(func() error { return srv.Serve(ctx, opts.Socket) })
	return g.Wait()
}

// listenRegistry binds the registry. Until the registry checks
// credentials, only loopback addresses are allowed: anything else would let
// the network push.
func listenRegistry(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("registry address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("registry address %q: only loopback addresses are allowed, as the registry has no authentication yet", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: %w; choose another address with --registry-listen or [registry] listen in config.toml (empty turns it off)", err)
	}
	return l, nil
}

// nodeCollector reports what the node fetched from peers and read locally.
type nodeCollector struct{ n *node.Node }

var (
	fetchedBlocksDesc = prometheus.NewDesc("shoal_fetched_blocks_total", "Blocks received from peers, by protocol.", []string{"protocol"}, nil)
	fetchedBytesDesc  = prometheus.NewDesc("shoal_fetched_bytes_total", "Bytes of blocks received from peers, by protocol.", []string{"protocol"}, nil)
	blobReadsDesc     = prometheus.NewDesc("shoal_blob_reads_total", "Blobs read, by whether they were stored here when asked for (local) or came from peers.", []string{"from"}, nil)
)

func (nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fetchedBlocksDesc
	ch <- fetchedBytesDesc
	ch <- blobReadsDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
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
}
