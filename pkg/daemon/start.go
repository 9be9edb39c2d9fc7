package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// StartOptions are how one daemon differs from its home's config.toml:
// what its command line says.
type StartOptions struct {
	// Listen replaces the config's swarm addresses when not nil.
	Listen []string
	// Peers are connected in addition to the config's.
	Peers  []string
	NoMDNS bool
	// Socket replaces the config's API socket when not empty.
	Socket string
	// Mirrors are mirrored in addition to the config's [[mirror]] entries.
	Mirrors []upstream.Endpoint
	// MirrorWholeOnly turns off swarming while pulling (mirror.Peers).
	MirrorWholeOnly bool
	// Configure changes the settings the daemon runs with (the registry,
	// the group, metrics), read from config.toml, before it starts.
	Configure func(*config.Config)
	Log       *slog.Logger
}

// ErrRunning means a daemon already serves the home.
var ErrRunning = errkind.New("a shoal daemon is running on this home already", errdefs.ErrAlreadyExists)

// lockWait is how long a starting daemon waits for a command that holds
// the store to finish.
const lockWait = 15 * time.Second

// Start opens the node at home, online and announcing, and runs it with
// the servers its config and opts ask for (Run) until ctx ends.
func Start(ctx context.Context, home string, opts StartOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A daemon that answers on the home's socket holds the store for
	// good: say so now rather than wait for its lock.
	if cfg, err := config.LoadConfig(home); err == nil {
		if c, err := api.Dial(ctx, cfg.SocketPath(home)); err == nil {
			c.Close()
			return fmt.Errorf("%s: %w (it answers on %s); stop it, or give this one another home", home, ErrRunning, cfg.SocketPath(home))
		}
	}
	n, err := node.Open(ctx, home, node.Options{Online: true, Announce: true, Listen: opts.Listen, Peers: opts.Peers, NoMDNS: opts.NoMDNS, Logger: log, LockWait: lockWait})
	if err != nil {
		return err
	}
	defer n.Close()
	cfg := n.Config()
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	socket := opts.Socket
	if socket == "" {
		socket = cfg.SocketPath(home)
	}
	mirrors, err := MirrorEndpoints(home, cfg.Mirror)
	if err != nil {
		return err
	}
	mirrors = append(mirrors, opts.Mirrors...)
	if len(mirrors) > 0 && cfg.Registry.Listen == "" {
		return errkind.New("mirroring needs the registry: give it an address (--registry-listen HOST:PORT, or [registry] listen)", errdefs.ErrInvalidArgument)
	}
	id, err := n.ID(ctx)
	if err != nil {
		return err
	}
	log.Info("shoal daemon running", "peer", id.ID, "addresses", strings.Join(id.Addresses, " "), "api", socket)
	return Run(ctx, n, RunOptions{
		Socket: socket, Registry: cfg.Registry, Containerd: cfg.Containerd.Paths(home), Mount: cfg.Mount.Paths(home),
		Group: cfg.Group.Paths(home), Mirrors: mirrors, MirrorWholeOnly: opts.MirrorWholeOnly,
		MetricsListen: cfg.Daemon.MetricsListen, Log: log,
	})
}
