package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/snapshotter"
	"google.golang.org/grpc"
)

// containerdPlugins are shoal's containerd proxy plugins, served over
// gRPC on one unix socket.
type containerdPlugins struct {
	sn  *snapshotter.Snapshotter
	srv *grpc.Server
	l   net.Listener
}

// openContainerd opens the snapshotter and listens on cfg.Socket; find
// tells which images containerd pulled are on IPFS.
func openContainerd(ctx context.Context, n *node.Node, cfg node.ContainerdConfig, find snapshotter.RootFinder, metrics prometheus.Registerer, log *slog.Logger) (*containerdPlugins, error) {
	sn, err := snapshotter.New(ctx, cfg.Root, n,
		snapshotter.WithLogger(log),
		snapshotter.WithFetchTimeout(cfg.FetchTimeout.Duration),
		snapshotter.WithResolver(snapshotter.NewResolver(n, cfg.FetchTimeout.Duration, find)))
	if err != nil {
		return nil, err
	}
	_ = os.Remove(cfg.Socket)
	l, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		sn.Close()
		return nil, fmt.Errorf("containerd plugins: %w; choose another socket with [containerd] socket in config.toml (empty turns them off)", err)
	}
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		l.Close()
		sn.Close()
		return nil, err
	}
	if metrics != nil {
		metrics.MustRegister(sn.Stats().Collector())
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	return &containerdPlugins{sn: sn, srv: srv, l: l}, nil
}

// serve serves containerd until ctx ends, then closes the snapshotter.
func (p *containerdPlugins) serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(p.l) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		// containerd's calls are short; one that hangs does not hold
		// the daemon's exit.
		t := time.AfterFunc(5*time.Second, p.srv.Stop)
		p.srv.GracefulStop()
		t.Stop()
		<-errc
	}
	os.Remove(p.l.Addr().String())
	if cerr := p.sn.Close(); err == nil {
		err = cerr
	}
	return err
}
