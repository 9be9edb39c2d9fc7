package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	ds "github.com/ipfs/go-datastore"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoal-ipfs/shoal/internal/httpserve"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"golang.org/x/sync/errgroup"
)

// startRegistry serves the OCI registry over store, with its records in
// meta and its uploads under uploadDir, and metrics on /metrics, at
// cfg.Listen; the servers run in g until ctx ends. It returns the registry
// and the address it listens on.
func startRegistry(ctx context.Context, g *errgroup.Group, store registry.Store, meta ds.Batching, uploadDir string, cfg config.RegistryConfig, metrics *prometheus.Registry, log *slog.Logger, extra ...registry.Option) (*registry.Registry, string, error) {
	ropts := append([]registry.Option{registry.WithLogger(log), registry.WithFetchTimeout(cfg.FetchTimeout.Duration)}, extra...)
	if cfg.Htpasswd != "" {
		users, err := registry.LoadHtpasswd(cfg.Htpasswd)
		if err != nil {
			return nil, "", err
		}
		ropts = append(ropts, registry.WithBasicAuth(users, cfg.PullAuth))
	}
	if err := checkExposure(cfg); err != nil {
		return nil, "", err
	}
	if !isLoopback(cfg.Listen) && cfg.TLSCert == "" {
		log.Warn("registry serves plain HTTP beyond loopback: credentials cross the network in the clear; set [registry] tls-cert and tls-key", "address", cfg.Listen)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, "", fmt.Errorf("registry: %w; choose another address with --registry-listen or [registry] listen in config.toml (empty turns it off)", err)
	}
	ropts = append(ropts, registry.WithMetrics(metrics))
	rg, err := registry.New(store, meta, uploadDir, ropts...)
	if err != nil {
		l.Close()
		return nil, "", err
	}
	// A client that sends no request within ReadHeaderTimeout, or keeps a
	// connection idle past IdleTimeout, is cut off. Bodies and responses
	// get no whole-request bound (ReadTimeout, WriteTimeout), which would
	// cut off a large blob at a slow client however well it moves: the
	// registry moves a deadline with every read and write instead
	// (registry.WithClientTimeout).
	hs := &http.Server{
		Handler:           registryHandler(rg, metrics, cfg),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			l.Close()
			return nil, "", fmt.Errorf("registry TLS: %w", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	addr := l.Addr().String()
	log.Info("registry listening", "address", addr, "tls", cfg.TLSCert != "", "auth", cfg.Htpasswd != "", "metrics", "/metrics")
	g.Go(func() error { rg.Run(ctx); return nil })
	g.Go(func() error { return httpserve.Until(ctx, hs, l) })
	return rg, addr, nil
}

// registryHandler serves the registry and /metrics. On loopback only the
// node's own processes reach /metrics; beyond it, what the metrics tell
// (images pulled and pushed, peers, the process) is no one else's
// business, so they need a registry user's credentials, as pushes do.
func registryHandler(rg *registry.Registry, metrics *prometheus.Registry, cfg config.RegistryConfig) http.Handler {
	var m http.Handler = promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})
	if !isLoopback(cfg.Listen) {
		m = rg.RequireCredentials(m)
	}
	mux := http.NewServeMux()
	mux.Handle("/", rg)
	mux.Handle("GET /metrics", m)
	return mux
}

// RunRegistry serves only the OCI registry and its /metrics over store
// (an external kubo daemon, say) until ctx ends. The registry's records
// (tags, repositories) live in a datastore under dir, its unfinished
// uploads in dir/registry-uploads.
func RunRegistry(ctx context.Context, store registry.Store, dir string, cfg config.RegistryConfig, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		return errors.New("no registry address: give --registry-listen HOST:PORT or set [registry] listen in config.toml")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	meta, err := pebbleds.NewDatastore(filepath.Join(dir, "registry"))
	if err != nil {
		return fmt.Errorf("registry records in %s: %w (does another shoal daemon use this home?)", dir, err)
	}
	defer meta.Close()
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g, gctx := errgroup.WithContext(ctx)
	if _, _, err := startRegistry(gctx, g, store, meta, filepath.Join(dir, "registry-uploads"), cfg, metrics, log); err != nil {
		return err
	}
	return g.Wait()
}
