package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/daemon"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/spf13/cobra"
)

func mountCmd(g *globals) *cobra.Command {
	var platform, metricsListen, record string
	var timeout, statsEvery, readTimeout time.Duration
	var background config.Size
	c := &cobra.Command{
		Use: "mount CID DIR",
		Example: `  shoal mount bafk... /mnt/app &                  # files fetched as they are read
  shoal mount bafk... /mnt/app --record startup.list --stats
  shoal mount bafk... /mnt/app --platform linux/arm64`,
		Short: "Mount an image's root filesystem read-only; files are fetched as they are read",
		Long: `Mount the merged root filesystem of an image at DIR, read-only, and serve it
until Ctrl-C or ` + "`shoal unmount DIR`" + `. Directory listings and metadata come from
the layers' indexes; a file's bytes are fetched from the local store or from
peers when it is read, and kept in the store. A file read whole is also kept
as a plain file ([mount] file-cache in config.toml), and later opens of it
read that copy.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			dir := args[1]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return usageError{fmt.Errorf("mount point %s is not a directory", dir)}
			}
			want := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
			if platform != "" {
				if want, err = image.ParsePlatform(platform); err != nil {
					return usageError{err}
				}
			}
			return g.withAPI(ctx, true, func(st api.API) error {
				im, err := lazyfs.OpenImage(ctx, st, root, want, timeout)
				if err != nil {
					return err
				}
				defer im.Close()
				im.SetReadTimeout(readTimeout)
				for _, l := range im.FetchedWhole {
					hint := fmt.Sprintf("`shoal index %s` makes it lazy", root)
					if strings.HasSuffix(l.MediaType, "zstd") {
						hint = "a zstd stream is read from its start: as zstd:chunked or gzip it would mount lazily"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "shoal: layer %s has no index, fetched whole; %s\n", l.Digest, hint)
				}
				var rec *lazyfs.Recorder
				if record != "" {
					rec = lazyfs.NewRecorder()
					defer func() {
						if err := writeJSONFile(record, rec.List()); err != nil {
							fmt.Fprintln(cmd.ErrOrStderr(), "shoal: record:", err)
						}
					}()
				}
				cfg, err := config.LoadConfig(g.home)
				if err != nil {
					return err
				}
				cache, err := daemon.OpenFileCache(cfg.Mount.Paths(g.home))
				if err != nil {
					return err
				}
				if cache != nil {
					defer cache.Close()
				}
				report := func() {
					line := im.Stats.String()
					if n, ok := st.(interface {
						FetchStat() (node.FetchStat, error)
					}); ok {
						if fs, err := n.FetchStat(); err == nil {
							line += fmt.Sprintf("; %.1f MiB came from peers", float64(fs.BitswapBytes+fs.GatewayBytes)/(1<<20))
						}
					}
					fmt.Fprintln(cmd.ErrOrStderr(), "mount:", line)
				}
				if metricsListen != "" {
					stop, err := daemon.ServeMetrics(ctx, metricsListen, im.Stats.Collector())
					if err != nil {
						return err
					}
					defer stop()
				}
				if statsEvery > 0 {
					t := time.NewTicker(statsEvery)
					quit := make(chan struct{})
					defer func() { t.Stop(); close(quit) }()
					go func() {
						for {
							select {
							case <-t.C:
								report()
							case <-quit:
								return
							}
						}
					}()
				}
				err = lazyfs.Serve(ctx, dir, im, st, lazyfs.ServeOptions{
					MountOptions: lazyfs.MountOptions{Name: "shoal:" + root.String(), Log: g.logger(), Record: rec, Cache: cache},
					Rate:         int64(background),
					Report: func(format string, args ...any) {
						fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...)
					},
					Mounted: func() {
						fmt.Fprintf(cmd.ErrOrStderr(), "mounted %s (%s) at %s; Ctrl-C or `shoal unmount %s` ends it\n", root, im.Manifest.Digest, dir, dir)
					},
				})
				if err != nil {
					return fmt.Errorf("mount %s at %s: %w", root, dir, err)
				}
				report()
				return nil
			})
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "the image's platform to mount, os/arch[/variant] (default: this machine's)")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up on the image's tree and indexes when nothing has arrived for this long")
	c.Flags().DurationVar(&readTimeout, "read-timeout", lazyfs.DefaultReadTimeout, "a read of a file whose bytes no peer sends in this long fails with EIO")
	c.Flags().DurationVar(&statsEvery, "stats", 0, "print what the mount read and fetched this often (it is printed at the end anyway)")
	c.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve the mount's Prometheus metrics on this host:port")
	c.Flags().StringVar(&record, "record", "", "write the files read through the mount to this prefetch list at the end (for shoal index --prefetch)")
	c.Flags().Var(&background, "background-rate", "after any prefetch, fetch the rest of the image at this many bytes a second, as a size: 4MiB, 512KiB or a byte count (0: do not)")
	addPeerFlag(c, g)
	return c
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func unmountCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:     "unmount DIR",
		Example: `  shoal unmount /mnt/app`,
		Short:   "Unmount an image mounted by shoal mount, also one whose process was killed",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lazyfs.Unmount(args[0]); err != nil {
				return fmt.Errorf("unmount %s: %w", args[0], err)
			}
			return nil
		},
	}
}
