package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/daemon"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/spf13/cobra"
)

func mountCmd(g *globals) *cobra.Command {
	var platform string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "mount CID DIR",
		Short: "Mount an image's root filesystem read-only; files are fetched as they are read",
		Long: `Mount the merged root filesystem of an image at DIR, read-only, and serve it
until Ctrl-C or ` + "`shoal unmount DIR`" + `. Directory listings and metadata come from
the layers' indexes; a file's bytes are fetched from the local store or from
peers when it is read, and kept in the store.`,
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
			return g.withAPI(ctx, true, func(api daemon.API) error {
				im, err := lazyfs.OpenImage(ctx, api, root, want, timeout)
				if err != nil {
					return err
				}
				defer im.Close()
				srv, err := lazyfs.Mount(dir, im.Tree, lazyfs.MountOptions{Name: "shoal:" + root.String(), Log: g.logger()})
				if err != nil {
					return fmt.Errorf("mount %s at %s: %w", root, dir, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "mounted %s (%s) at %s; Ctrl-C or `shoal unmount %s` ends it\n", root, im.Manifest.Digest, dir, dir)
				served := make(chan struct{})
				go func() { srv.Wait(); close(served) }()
				select {
				case <-served: // unmounted from outside
				case <-ctx.Done():
					if err := srv.Unmount(); err != nil {
						_ = lazyfs.Unmount(dir)
					}
					<-served
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "the image's platform to mount, os/arch[/variant] (default: this machine's)")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up on the image's tree and indexes when nothing has arrived for this long")
	addPeerFlag(c, g)
	return c
}

func unmountCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unmount DIR",
		Short: "Unmount an image mounted by shoal mount, also one whose process was killed",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lazyfs.Unmount(args[0]); err != nil {
				return fmt.Errorf("unmount %s: %w", args[0], err)
			}
			return nil
		},
	}
}

