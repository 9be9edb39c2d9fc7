package main

import (
	"errors"
	"fmt"

	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/spf13/cobra"
)

func mirrorCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "mirror",
		Short: "Manage the daemon's mirror of other registries (shoal daemon --mirror)",
	}
	c.AddCommand(forgetCmd(g))
	return c
}

func forgetCmd(g *globals) *cobra.Command {
	var local bool
	c := &cobra.Command{
		Use:   "forget REGISTRY/REPOSITORY:TAG",
		Short: "Drop a mirrored tag's cached digest, on this node and its peers",
		Long: `Drop the digest a mirrored tag was last resolved to, on the running
daemon and on every peer connected to it: the next pull of the tag asks
its registry again. Use it when a tag was moved upstream and pods must
see it before the tag TTL (--mirror-tag-ttl) runs out.`,
		Example: `  shoal mirror forget docker.io/library/nginx:1.27
  shoal mirror forget nginx:1.27 --local`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.ensureInit(); err != nil {
				return err
			}
			cfg, err := config.LoadConfig(g.home)
			if err != nil {
				return err
			}
			st, err := api.Dial(cmd.Context(), cfg.SocketPath(g.home))
			if errors.Is(err, api.ErrNoDaemon) {
				return errors.New("no daemon is running: the mirror lives in `shoal daemon --mirror REGISTRY`")
			}
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.ForgetTag(cmd.Context(), args[0], local); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "forgot %s\n", args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&local, "local", false, "on this node only, not its peers")
	return c
}
