package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/daemon"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
	"github.com/spf13/cobra"
)

func initCmd(g *globals) *cobra.Command {
	cfg := config.DefaultConfig()
	c := &cobra.Command{
		Use: "init",
		Example: `  shoal init
  shoal init --listen /ip4/0.0.0.0/tcp/4051 --mdns=false
  shoal init --layout unixfs-v1-2025 --home /var/lib/shoal`,
		Short: "Create the node's identity, config and stores under $SHOAL_HOME",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			created, err := config.Init(g.home, cfg)
			if err != nil {
				return err
			}
			if created {
				// The stores are made now, as kubo's init makes its
				// datastore: a home that cannot hold them fails here, and
				// the first push or pull does not pay for making them.
				n, err := node.Open(cmd.Context(), g.home, node.Options{})
				if err != nil {
					return fmt.Errorf("create the stores in %s: %w", g.home, err)
				}
				if err := n.Close(); err != nil {
					return fmt.Errorf("create the stores in %s: %w", g.home, err)
				}
			} else {
				if err := initFlagsHold(cmd, g.home, cfg); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s is already initialised\n", g.home)
			}
			id, err := config.PeerID(g.home)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "peer ID %s\nstate in %s\n", id, g.home)
			return nil
		},
	}
	c.Flags().StringVar(&cfg.Import.Layout, "layout", cfg.Import.Layout, "UnixFS layout of new blobs: kubo or unixfs-v1-2025")
	c.Flags().StringVar(&cfg.Datastore.Blocks, "blocks", cfg.Datastore.Blocks, "block store: flatfs or pebble")
	c.Flags().StringArrayVar(&cfg.Swarm.Listen, "listen", cfg.Swarm.Listen, "daemon swarm address (repeatable)")
	c.Flags().BoolVar(&cfg.Swarm.MDNS, "mdns", cfg.Swarm.MDNS, "find peers on the local network by mDNS (--mdns=false to keep quiet)")
	c.Flags().StringVar(&cfg.Registry.Listen, "registry-listen", cfg.Registry.Listen, "the daemon's OCI registry address, port 0 for a free one (empty turns it off)")
	return c
}

// initFlagsHold checks init's flags against a home initialised before:
// flags that would change its config are refused, never dropped in
// silence.
func initFlagsHold(cmd *cobra.Command, home string, want config.Config) error {
	have, err := config.LoadConfig(home)
	if err != nil {
		return err
	}
	var differ []string
	for flag, v := range map[string][2]any{
		"layout":          {want.Import.Layout, have.Import.Layout},
		"blocks":          {want.Datastore.Blocks, have.Datastore.Blocks},
		"listen":          {want.Swarm.Listen, have.Swarm.Listen},
		"mdns":            {want.Swarm.MDNS, have.Swarm.MDNS},
		"registry-listen": {want.Registry.Listen, have.Registry.Listen},
	} {
		if cmd.Flags().Changed(flag) && fmt.Sprint(v[0]) != fmt.Sprint(v[1]) {
			differ = append(differ, fmt.Sprintf("--%s %v (the home has %v)", flag, v[0], v[1]))
		}
	}
	if len(differ) == 0 {
		return nil
	}
	slices.Sort(differ)
	return fmt.Errorf("%s is initialised already, and init's flags shape only a new home: %s; edit %s instead (or give --home another directory)",
		home, strings.Join(differ, ", "), filepath.Join(home, "config.toml"))
}

func idCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use: "id",
		Example: `  shoal id
  shoal id --json`,
		Short: "Show the node's peer ID and listen addresses",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAPI(cmd.Context(), false, func(st api.API) error {
				id, err := st.ID(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), id)
				}
				fmt.Fprintln(cmd.OutOrStdout(), id.ID)
				for _, a := range id.Addresses {
					fmt.Fprintln(cmd.OutOrStdout(), a)
				}
				if len(id.Listen) > 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no daemon runs; `shoal daemon` will listen on:")
					for _, a := range id.Listen {
						fmt.Fprintln(cmd.OutOrStdout(), a)
					}
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (fields ID and Addresses, as ipfs id prints them; Registry when a daemon serves one; without a daemon, Listen: where one will listen)")
	return c
}

func daemonCmd(g *globals) *cobra.Command {
	var listen, mirrors []string
	var socket, registryListen, metricsListen, groupName string
	var noMDNS bool
	var tagTTL time.Duration
	var cacheSize config.Size
	var wholeOnly bool
	c := &cobra.Command{
		Use: "daemon",
		Example: `  shoal daemon
  shoal daemon --peer /dns4/shoal.shoal-system.svc/tcp/4051 --metrics-listen :5052
  shoal daemon --mirror docker.io --mirror ghcr.io --log-format json
  shoal daemon --group build-farm`,
		Short: "Run the node: serve blocks to peers and the API to other shoal commands",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.ipfsAPI != "" {
				if len(mirrors) > 0 {
					return usageError{errors.New("--mirror needs the embedded node: mirrored content is shared with peers over shoal's own protocol")}
				}
				return kuboDaemon(cmd, g, registryListen)
			}
			var endpoints []upstream.Endpoint
			for _, spec := range mirrors {
				ep, err := upstream.ParseMirror(spec)
				if err != nil {
					return usageError{fmt.Errorf("--mirror: %w", err)}
				}
				endpoints = append(endpoints, ep)
			}
			if err := g.ensureInit(); err != nil {
				return err
			}
			return daemon.Start(cmd.Context(), g.home, daemon.StartOptions{
				Listen: listen, Peers: g.peers, NoMDNS: noMDNS, Socket: socket,
				Mirrors: endpoints, MirrorWholeOnly: wholeOnly, Log: g.daemonLogger(),
				Configure: func(cfg *config.Config) {
					flags := cmd.Flags()
					if flags.Changed("registry-listen") {
						cfg.Registry.Listen = registryListen
					}
					if flags.Changed("group") {
						cfg.Group.Name = groupName
					}
					if flags.Changed("metrics-listen") {
						cfg.Daemon.MetricsListen = metricsListen
					}
					if flags.Changed("mirror-tag-ttl") {
						cfg.Registry.MirrorTagTTL.Duration = tagTTL
					}
					if flags.Changed("mirror-cache-size") {
						cfg.Registry.MirrorCacheSize = cacheSize
					}
				},
			})
		},
	}
	c.Flags().StringArrayVar(&listen, "listen", nil, "swarm address, port 0 for a free port (repeatable; default from config)")
	c.Flags().StringVar(&socket, "api-socket", "", "API unix socket (default $SHOAL_HOME/shoal.sock)")
	c.Flags().BoolVar(&noMDNS, "no-mdns", false, "do not look for peers on the local network")
	c.Flags().StringVar(&groupName, "group", "", "be a member of this group, which shards images among its members (default from config: [group] name)")
	c.Flags().StringArrayVar(&mirrors, "mirror", nil, "mirror this registry for containerd: REGISTRY (docker.io, ghcr.io, HOST:PORT) or REGISTRY=URL (http://127.0.0.1:5000 for a plain-HTTP one), '*' for any registry over HTTPS (repeatable; also [[mirror]] in config.toml)")
	c.Flags().BoolVar(&wholeOnly, "mirror-whole-only", false, "peers serve mirrored blobs only once they hold them whole: no swarm while pulling (for comparison)")
	_ = c.Flags().MarkHidden("mirror-whole-only")
	c.Flags().Var(&cacheSize, "mirror-cache-size", "keep at most this much mirrored content (4GiB, 512MiB), the least recently served dropped first (default from config: [registry] mirror-cache-size; 0 keeps all)")
	c.Flags().DurationVar(&tagTTL, "mirror-tag-ttl", 0, "serve a mirrored tag as last resolved for this long before asking its registry again (default from config: [registry] mirror-tag-ttl, 1m)")
	c.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve /metrics, /healthz and /readyz on this host:port, apart from the registry (default from config: [daemon] metrics-listen; empty serves none)")
	c.Flags().StringVar(&registryListen, "registry-listen", "", "serve the OCI registry on this host:port, port 0 for a free one (default from config: 127.0.0.1:5050; empty turns it off)")
	addPeerFlag(c, g)
	return c
}

func imagesCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use: "images",
		Example: `  shoal images
  shoal images --json`,
		Short: "List pinned images",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAPI(cmd.Context(), false, func(st api.API) error {
				imgs, err := st.Images(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), imgs)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CID\tSOURCE\tPLATFORMS\tSIZE\tCREATED")
				for _, img := range imgs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.CID, img.Source, strings.Join(img.Platforms, ","), humanBytes(img.Size), img.Created.Local().Format(time.DateTime))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}

func rmCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use: "rm CID...",
		Example: `  shoal rm bafk...
  shoal rm bafk... bafk... && shoal gc`,
		Short: "Unpin images; `shoal gc` then frees their blocks",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("rm needs at least one CID")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAPI(cmd.Context(), false, func(st api.API) error {
				removed := []string{}
				for _, a := range args {
					c, err := transport.ParseCID(a)
					if err != nil {
						return usageError{err}
					}
					if err := st.RemoveImage(cmd.Context(), c); err != nil {
						return fmt.Errorf("rm %s: %w (see `shoal images`)", c, err)
					}
					if !asJSON {
						fmt.Fprintln(cmd.OutOrStdout(), c)
					}
					removed = append(removed, c.String())
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), struct{ Removed []string }{removed})
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object: Removed, the root CIDs unpinned")
	return c
}

func gcCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use: "gc",
		Example: `  shoal gc
  shoal gc --json`,
		Short: "Delete blocks that no pinned image uses",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAPI(cmd.Context(), false, func(st api.API) error {
				res, err := st.GC(cmd.Context())
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					if err := printJSON(out, res); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(out, "removed %d blocks (%s), kept %d\n", res.Blocks, humanBytes(res.Bytes), res.Kept)
				}
				for _, d := range res.Damaged {
					fmt.Fprintf(cmd.ErrOrStderr(), "damaged: blob %s lacks block %s (%s)\n", d.Blob, d.Block, d.Err)
				}
				if len(res.Damaged) > 0 {
					what := "their other blocks were kept"
					if res.Spared {
						what = "nothing was deleted"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "%d blocks of pinned images are missing or were corrupt; %s; run `shoal verify --repair`\n", len(res.Damaged), what)
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object: Blocks and Bytes removed, Kept, Damaged (Blob, Block, Err), Spared")
	return c
}

func verifyCmd(g *globals) *cobra.Command {
	var repair, asJSON bool
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check every stored block against its CID, and pinned images for missing blocks",
		Long: `Read every block in the store and hash it against its CID, then walk every
pinned image for blocks it lacks. Exits 1 if anything is corrupt or missing.

With --repair, corrupt blocks are dropped and what pinned images lack is
fetched again from peers (through a running daemon, or with --peer);
whatever no peer has stays reported.`,
		Example: `  shoal verify
  shoal verify --repair --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAPI(cmd.Context(), repair, func(st api.API) error {
				res, err := st.Verify(cmd.Context(), repair)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					if err := json.NewEncoder(out).Encode(res); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(out, "checked %d blocks (%s): %d corrupt, %d missing from pinned images\n", res.Blocks, humanBytes(res.Bytes), len(res.Corrupt), len(res.Missing))
					for _, c := range res.Corrupt {
						fmt.Fprintf(out, "corrupt: %s\n", c)
					}
					for _, d := range res.Missing {
						fmt.Fprintf(out, "missing: block %s of blob %s\n", d.Block, d.Blob)
					}
					if repair {
						fmt.Fprintf(out, "repair: dropped %d corrupt blocks, fetched %d missing\n", len(res.Corrupt), res.Fetched)
					}
				}
				switch {
				case len(res.Missing) > 0:
					return errkind.New(fmt.Sprintf("verify: %d blocks of pinned images are missing; `shoal verify --repair` with a peer that holds them fetches them, or `shoal rm` the image", len(res.Missing)), errdefs.ErrDataLoss)
				case len(res.Corrupt) > 0 && !repair:
					return errkind.New(fmt.Sprintf("verify: %d blocks are corrupt; `shoal verify --repair` drops them so that they are fetched again", len(res.Corrupt)), errdefs.ErrDataLoss)
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&repair, "repair", false, "drop corrupt blocks and fetch what pinned images lack from peers")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return c
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func swarmCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "swarm",
		Short: "The node's swarm: private groups",
	}
	c.AddCommand(keyCmd("Print a new swarm key, for a private group",
		`Print a new random swarm key (kubo's swarm.key format). Nodes that have the
same key in $SHOAL_HOME/swarm.key ([swarm] key) form a private group: they
connect only to each other, over TCP. Give it to members over a secure
channel, as any secret, and keep it readable by its owner only (mode 0600):
a node refuses a key that group or other users can read or write.`,
		`  (umask 077; shoal swarm key > $SHOAL_HOME/swarm.key)`, node.NewSwarmKey))
	return c
}

// keyCmd is a `key` command that prints what newKey makes.
func keyCmd(short, long, example string, newKey func() ([]byte, error)) *cobra.Command {
	return &cobra.Command{
		Use:     "key",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := newKey()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(key)
			return err
		},
	}
}
