package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/plugins/services/content/contentserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/contentstore"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/snapshotter"
	"google.golang.org/grpc"
)

// containerdPlugins are shoal's containerd proxy plugins, served over
// gRPC on one unix socket: the content store, and as root the
// snapshotter.
type containerdPlugins struct {
	sn *snapshotter.Snapshotter // nil when not root
	// cache keeps the files lazy layers' readers read whole; nil: none.
	cache *lazyfs.FileCache
	srv   *grpc.Server
	l     net.Listener
}

// OpenFileCache opens the file cache of lazy mounts that cfg (its paths
// absolute) describes; nil when it is turned off.
func OpenFileCache(cfg config.MountConfig) (*lazyfs.FileCache, error) {
	if cfg.FileCache == "" || cfg.FileCacheSize <= 0 {
		return nil, nil
	}
	c, err := lazyfs.OpenFileCache(cfg.FileCache, int64(cfg.FileCacheSize))
	if err != nil {
		return nil, fmt.Errorf("%w; choose another directory with [mount] file-cache in config.toml (empty turns it off)", err)
	}
	return c, nil
}

// openContainerd opens the plugins and listens on cfg.Socket; find tells
// the snapshotter which images containerd pulled are on IPFS.
func openContainerd(ctx context.Context, n *node.Node, cfg config.ContainerdConfig, mount config.MountConfig, find snapshotter.RootFinder, metrics prometheus.Registerer, log *slog.Logger) (_ *containerdPlugins, err error) {
	p := &containerdPlugins{srv: grpc.NewServer(contentstore.GRPCOptions()...)}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	cs, err := contentstore.New(n, n.Metadata("containerd-content"), filepath.Join(n.Home(), "containerd-ingest"))
	if err != nil {
		return nil, err
	}
	contentapi.RegisterContentServer(p.srv, contentserver.New(cs))
	if os.Geteuid() != 0 {
		log.Info("containerd snapshotter off: it mounts filesystems, which needs root")
	} else {
		if p.cache, err = OpenFileCache(mount); err != nil {
			return nil, err
		}
		p.sn, err = snapshotter.New(ctx, cfg.Root, n,
			snapshotter.WithLogger(log),
			snapshotter.WithFileCache(p.cache),
			snapshotter.WithFetchTimeout(cfg.FetchTimeout.Duration),
			snapshotter.WithResolver(snapshotter.NewResolver(n, cfg.FetchTimeout.Duration, find)))
		if err != nil {
			return nil, err
		}
		snapshotsapi.RegisterSnapshotsServer(p.srv, snapshotservice.FromSnapshotter(p.sn))
		if metrics != nil {
			metrics.MustRegister(p.sn.Stats().Collector())
		}
	}
	_ = os.Remove(cfg.Socket)
	if p.l, err = net.Listen("unix", cfg.Socket); err != nil {
		return nil, fmt.Errorf("containerd plugins: %w; choose another socket with [containerd] socket in config.toml (empty turns them off)", err)
	}
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *containerdPlugins) close() error {
	var err error
	if p.l != nil {
		p.l.Close()
	}
	if p.sn != nil {
		err = p.sn.Close()
	}
	if p.cache != nil {
		p.cache.Close()
	}
	return err
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
	if cerr := p.close(); err == nil {
		err = cerr
	}
	return err
}
