package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/containerd"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/upstream"
	"github.com/spf13/cobra"
)

// containerdPrefix starts a pull destination that is an image in containerd.
const containerdPrefix = "containerd:"

// containerdFlags choose a containerd, as ctr's global flags do.
type containerdFlags struct {
	address, namespace, snapshotter, platform string
}

func (f *containerdFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.address, "containerd-address", "", "containerd's socket for --to containerd:REF (default $CONTAINERD_ADDRESS, else "+containerd.DefaultAddress+")")
	c.Flags().StringVar(&f.namespace, "containerd-namespace", "", "containerd namespace (default $CONTAINERD_NAMESPACE, else "+containerd.DefaultNamespace+")")
	c.Flags().StringVar(&f.snapshotter, "snapshotter", containerd.DefaultSnapshotter, "the name of shoal's snapshotter in containerd's config")
	c.Flags().StringVar(&f.platform, "platform", "", "for --to containerd:REF, the platform to unpack, os/arch[/variant] (default: this machine's)")
}

// importToContainerd is `shoal pull CID --to containerd:REF`.
func importToContainerd(ctx context.Context, cmd *cobra.Command, st api.API, root cid.Cid, ref string, f containerdFlags, timeout time.Duration) error {
	want := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if f.platform != "" {
		var err error
		if want, err = image.ParsePlatform(f.platform); err != nil {
			return usageError{err}
		}
	}
	start := time.Now()
	res, err := containerd.Import(ctx, st, root, ref, containerd.Options{
		Address: f.address, Namespace: f.namespace, Snapshotter: f.snapshotter,
		Platform: want, Timeout: timeout,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "imported %s into containerd as %s in %s: %d layers lazy on %s, %d unpacked\n",
		root, res.Name, time.Since(start).Round(time.Millisecond), res.Lazy, f.snapshotter, res.Unpacked)
	fmt.Fprintln(cmd.OutOrStdout(), res.Name)
	return nil
}

func containerdCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "containerd",
		Short: "Plug shoal into containerd",
	}
	c.AddCommand(containerdConfigCmd(g))
	return c
}

func containerdConfigCmd(g *globals) *cobra.Command {
	var version int
	var withContent bool
	var mirrors []string
	var hostsDir string
	var rt runtimeFlags
	var write, remove bool
	c := &cobra.Command{
		Use:   "config",
		Short: "Print the containerd config that plugs in this node's daemon",
		Long: `Print the fragment of containerd's config.toml that plugs in the shoal
daemon of this home: its snapshotter as the proxy plugin "shoal", CRI
pulling lazily through it, the transfer service's unpack platforms, and
the hosts directory through which containerd reaches shoal's registry.
With --content, containerd's content store is shoal's too: every blob
containerd pulls, from any registry, lands in IPFS for peers to fetch.
Add it to /etc/containerd/config.toml and restart containerd.

With --mirror, the hosts.toml files that send containerd's pulls of those
registries through the daemon's mirror first. With --runtime, a drop-in
file for containerd's imports: the snapshotter's proxy plugin and a CRI
runtime handler that is the node's default runtime on shoal's snapshotter,
for a Kubernetes RuntimeClass, leaving containerd's default snapshotter as
it is. --write puts them in place and --remove takes them away, putting
back what was there.

The values are the running daemon's; without one, those of the config.`,
		Example: `  shoal containerd config >> /etc/containerd/config.toml
  shoal containerd config --mirror docker.io --mirror ghcr.io --write
  shoal containerd config --runtime shoal --write   # then restart containerd once
  shoal containerd config --mirror docker.io --runtime shoal --remove`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if write && remove {
				return usageError{errors.New("--write or --remove, not both")}
			}
			if version != 2 && version != 3 {
				return usageError{fmt.Errorf("--version %d: containerd's config versions are 2 (containerd 1.x) and 3 (2.x)", version)}
			}
			if len(mirrors) == 0 && rt.name == "" {
				if write || remove {
					return usageError{errors.New("--write and --remove go with --mirror REGISTRY or --runtime NAME")}
				}
				v, err := g.pluginConfig(cmd.Context())
				if err != nil {
					return err
				}
				v.Version, v.Content = version, withContent
				return containerd.WriteConfig(cmd.OutOrStdout(), v)
			}
			if len(mirrors) > 0 {
				if err := mirrorHosts(cmd, g, mirrors, hostsDir, write, remove); err != nil {
					return err
				}
			}
			if rt.name != "" {
				return runtimeDropIn(cmd, g, rt, version, cmd.Flags().Changed("version"), write, remove)
			}
			return nil
		},
	}
	c.Flags().IntVar(&version, "version", 3, "containerd's config version: 3 for containerd 2.x, 2 for 1.6 and 1.7 (with --runtime: that of --containerd-config)")
	c.Flags().BoolVar(&withContent, "content", false, "also replace containerd's content store with shoal's (containerd then needs the shoal daemon running)")
	c.Flags().StringArrayVar(&mirrors, "mirror", nil, "instead, the hosts.toml that sends containerd's pulls of REGISTRY[=URL] through the daemon's mirror first, the registry after ('*' for every registry; repeatable)")
	c.Flags().StringVar(&hostsDir, "hosts-dir", containerd.DefaultHostsDir, "containerd's hosts directory (its registry config_path), for --mirror")
	c.Flags().StringVar(&rt.name, "runtime", "", "instead, the drop-in giving containerd a CRI runtime handler NAME on shoal's snapshotter (a RuntimeClass's handler)")
	c.Flags().StringVar(&rt.dropIn, "drop-in", containerd.DefaultDropIn, "where the --runtime drop-in goes; containerd's config.toml must import it")
	c.Flags().StringVar(&rt.nodeConfig, "containerd-config", containerd.DefaultConfigFile, "containerd's config.toml, whose version and default runtime the --runtime handler copies")
	c.Flags().BoolVar(&write, "write", false, "write the --mirror and --runtime files (a file there not written by shoal is kept as FILE.shoal-backup)")
	c.Flags().BoolVar(&remove, "remove", false, "remove the --mirror and --runtime files shoal wrote, putting back what was there")
	return c
}

// runtimeFlags choose the runtime drop-in.
type runtimeFlags struct {
	name, dropIn, nodeConfig string
}

// runtimeDropIn prints, writes or removes the drop-in of a runtime handler
// on shoal's snapshotter, in the version of the node's config unless
// versionSet.
func runtimeDropIn(cmd *cobra.Command, g *globals, rt runtimeFlags, version int, versionSet, write, remove bool) error {
	out := cmd.OutOrStdout()
	if remove {
		removed, err := containerd.RemoveDropIn(rt.dropIn)
		if removed {
			fmt.Fprintln(out, "removed", rt.dropIn, "(containerd forgets the runtime when it restarts)")
		}
		return err
	}
	nodeVersion, base, err := containerd.ReadNodeRuntime(rt.nodeConfig)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(cmd.ErrOrStderr(), "shoal: no %s: the runtime handler is runc's defaults\n", rt.nodeConfig)
	case err != nil:
		return err
	case !versionSet:
		version = nodeVersion
	}
	v, err := g.pluginConfig(cmd.Context())
	if err != nil {
		return err
	}
	v.Version = version
	data, err := containerd.DropIn(v, rt.name, base)
	if err != nil {
		return err
	}
	if !write {
		_, err := out.Write(data)
		return err
	}
	changed, err := containerd.WriteDropIn(rt.dropIn, data)
	if err != nil {
		return err
	}
	if changed {
		fmt.Fprintln(out, "wrote", rt.dropIn, "(containerd reads it when it restarts)")
	} else {
		fmt.Fprintln(out, "unchanged", rt.dropIn)
	}
	return nil
}

// mirrorHosts prints, writes or removes the hosts.toml files of mirrored
// registries.
func mirrorHosts(cmd *cobra.Command, g *globals, specs []string, dir string, write, remove bool) error {
	var eps []upstream.Endpoint
	for _, s := range specs {
		ep, err := upstream.ParseMirror(s)
		if err != nil {
			return usageError{fmt.Errorf("--mirror: %w", err)}
		}
		eps = append(eps, ep)
	}
	if remove {
		changed, err := containerd.RemoveMirrorHosts(dir, eps)
		for _, p := range changed {
			fmt.Fprintln(cmd.OutOrStdout(), "removed", p)
		}
		return err
	}
	cfg, err := config.LoadConfig(g.home)
	if err != nil {
		return err
	}
	addr := cfg.Registry.Listen
	if st, err := api.Dial(cmd.Context(), cfg.SocketPath(g.home)); err == nil {
		if id, err := st.ID(cmd.Context()); err == nil && id.Registry != "" {
			addr = id.Registry
		}
		st.Close()
	}
	if addr == "" {
		return fmt.Errorf("the daemon of %s serves no registry: set [registry] listen in its config.toml", g.home)
	}
	url := containerd.MirrorURL(addr, cfg.Registry.TLSCert != "")
	if write {
		written, err := containerd.WriteMirrorHosts(dir, url, eps)
		for _, p := range written {
			fmt.Fprintln(cmd.OutOrStdout(), "wrote", p)
		}
		return err
	}
	for _, ep := range eps {
		fmt.Fprintf(cmd.OutOrStdout(), "# %s\n%s\n", containerd.HostsPath(dir, ep), containerd.MirrorHosts(ep, url))
	}
	return nil
}

// pluginConfig is what containerd's config names of the daemon of g's
// home: the running daemon's, else its config.toml's.
func (g *globals) pluginConfig(ctx context.Context) (containerd.PluginConfig, error) {
	cfg, err := config.LoadConfig(g.home)
	if err != nil {
		return containerd.PluginConfig{}, err
	}
	ccfg := cfg.Containerd.Paths(g.home)
	v := containerd.PluginConfig{
		Socket: ccfg.Socket, Root: ccfg.Root, Registry: cfg.Registry.Listen,
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		HostsDir: "/etc/containerd/certs.d", Snapshotter: containerd.DefaultSnapshotter,
	}
	if st, err := api.Dial(ctx, cfg.SocketPath(g.home)); err == nil {
		defer st.Close()
		if id, err := st.ID(ctx); err == nil {
			v.Running, v.Registry, v.Socket = true, id.Registry, id.Containerd
		}
	}
	if v.Socket == "" {
		return v, fmt.Errorf("the daemon of %s serves no containerd plugins: set [containerd] socket in its config.toml, and run it as root", g.home)
	}
	return v, nil
}
