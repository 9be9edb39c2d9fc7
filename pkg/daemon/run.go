package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/registry"
	"golang.org/x/sync/errgroup"
)

// RunOptions are the servers of a running daemon.
type RunOptions struct {
	// Socket is the API socket for shoal commands.
	Socket string
	// RegistryListen is the registry's host:port; empty turns it off.
	RegistryListen string
	// FetchTimeout bounds how long a registry request waits for peers.
	FetchTimeout time.Duration
	Log          *slog.Logger
}

// Run serves n on the API socket and, if asked, the OCI registry, until
// ctx ends or a server fails.
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
		rg, err := registry.New(n, n.Metadata("registry"), filepath.Join(n.Home(), "registry-uploads"),
			registry.WithLogger(log), registry.WithFetchTimeout(opts.FetchTimeout))
		if err != nil {
			l.Close()
			return err
		}
		srv.registry = l.Addr().String()
		log.Info("registry listening", "address", srv.registry)
		g.Go(func() error { return rg.Serve(ctx, l) })
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
