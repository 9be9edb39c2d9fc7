package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/daemon"
	"github.com/shoal-ipfs/shoal/pkg/kubo"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/spf13/cobra"
)

// kubo returns the client of the kubo daemon --ipfs-api names, connected
// to --peer. Blobs are added in the layout of $SHOAL_HOME's config (kubo's
// default without one); nothing else of the home is used.
func (g *globals) kubo(ctx context.Context) (*kubo.Client, error) {
	addr, err := kubo.ResolveAddress(g.ipfsAPI)
	if err != nil && g.ipfsAPI != kubo.Auto {
		return nil, usageError{err} // a malformed --ipfs-api
	}
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadConfig(g.home)
	if err != nil {
		return nil, err
	}
	layout, err := blob.ParseLayout(cfg.Import.Layout)
	if err != nil {
		return nil, err
	}
	c, err := kubo.Dial(ctx, addr, layout)
	if err != nil {
		return nil, err
	}
	if len(g.peers) > 0 {
		peers, err := node.ParsePeers(g.peers)
		if err != nil {
			c.Close()
			return nil, usageError{err}
		}
		if err := c.Connect(ctx, peers...); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// kuboDaemon is `shoal daemon --ipfs-api`: the OCI registry over the kubo
// daemon, which itself serves blocks to peers; there is no embedded node,
// so no swarm and no API socket.
func kuboDaemon(cmd *cobra.Command, g *globals, registryListen string) error {
	var wrong []string
	for _, f := range []string{"listen", "api-socket", "no-mdns", "group"} {
		if cmd.Flags().Changed(f) {
			wrong = append(wrong, "--"+f)
		}
	}
	if len(wrong) > 0 {
		return usageError{fmt.Errorf("%s: kubo's own config decides that with --ipfs-api", strings.Join(wrong, ", "))}
	}
	ctx := cmd.Context()
	c, err := g.kubo(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cfg, err := config.LoadConfig(g.home)
	if err != nil {
		return err
	}
	reg := cfg.Registry
	if cmd.Flags().Changed("registry-listen") {
		reg.Listen = registryListen
	}
	log := g.daemonLogger()
	log.Info("shoal daemon running on kubo", "api", c.Address().String())
	return daemon.RunRegistry(ctx, c, filepath.Join(g.home, "kubo"), reg, log)
}
