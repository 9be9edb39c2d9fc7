package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ipfs/shoal/internal/secretfile"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
)

// MirrorEndpoints reads the [[mirror]] entries of a config, password
// files under home, into the endpoints the mirror pulls through.
func MirrorEndpoints(home string, cfgs []config.MirrorConfig) ([]upstream.Endpoint, error) {
	var out []upstream.Endpoint
	for _, c := range cfgs {
		spec := c.Registry
		if c.URL != "" {
			spec += "=" + c.URL
		}
		ep, err := upstream.ParseMirror(spec)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: %w", c.Registry, err)
		}
		if c.Username != "" {
			if c.PasswordFile == "" {
				return nil, fmt.Errorf("mirror %s: username without password-file", c.Registry)
			}
			path := c.PasswordFile
			if !filepath.IsAbs(path) {
				path = filepath.Join(home, path)
			}
			pw, err := secretfile.Read("mirror password", path, 4096)
			if err != nil {
				return nil, fmt.Errorf("mirror %s: %w", c.Registry, err)
			}
			ep.Username, ep.Password = c.Username, strings.TrimRight(string(pw), "\r\n")
		}
		out = append(out, ep)
	}
	return out, nil
}

// openMirror makes the node a mirror of endpoints.
func openMirror(n *node.Node, endpoints []upstream.Endpoint, wholeOnly bool, cfg config.RegistryConfig, metrics prometheus.Registerer, log *slog.Logger) (*mirror.Mirror, error) {
	peers := mirror.NewPeers(n.Host(), n.Router(), n.Private())
	peers.WholeOnly = wholeOnly
	m, err := mirror.New(n, n.Metadata("mirror"), mirror.Options{
		Endpoints: endpoints,
		TagTTL:    cfg.MirrorTagTTL.Duration,
		CacheSize: int64(cfg.MirrorCacheSize),
		Collect: func(ctx context.Context) error {
			_, err := n.GC(ctx)
			return err
		},
		Spool:   filepath.Join(n.Home(), "mirror-spool"),
		Peers:   peers,
		Metrics: metrics,
		Log:     log,
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(endpoints))
	for i, ep := range endpoints {
		names[i] = ep.Registry + "=" + ep.BaseURL()
	}
	log.Info("mirroring registries", "registries", strings.Join(names, " "), "tag-ttl", cfg.MirrorTagTTL.Duration, "cache-size", cfg.MirrorCacheSize)
	return m, nil
}
