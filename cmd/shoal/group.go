package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/shoal-ipfs/shoal/pkg/daemon"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/spf13/cobra"
)

// groupDaemon is the running daemon, for commands only a group member
// can answer.
func (g *globals) groupDaemon(ctx context.Context, what string) (*daemon.Client, error) {
	if err := g.ensureInit(); err != nil {
		return nil, err
	}
	cfg, err := node.LoadConfig(g.home)
	if err != nil {
		return nil, err
	}
	c, err := daemon.Dial(ctx, cfg.SocketPath(g.home))
	if errors.Is(err, daemon.ErrNoDaemon) {
		return nil, fmt.Errorf("%s needs a running daemon in a group: start `shoal daemon --group NAME`", what)
	}
	return c, err
}

func shardCmd(g *globals) *cobra.Command {
	var replicas int
	var remove bool
	c := &cobra.Command{
		Use:   "shard CID",
		Short: "Share an image's chunks among the daemon's group, each kept by --replicas members",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			if remove {
				replicas = 0
			} else if replicas < 1 {
				return usageError{fmt.Errorf("--replicas %d: want 1 or more (--remove takes an image out of the group's care)", replicas)}
			}
			client, err := g.groupDaemon(cmd.Context(), "shard")
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.Shard(cmd.Context(), root, replicas); err != nil {
				return err
			}
			if remove {
				fmt.Fprintf(cmd.OutOrStdout(), "%s left the group's care; members drop their chunks at their next gc\n", root)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s sharded, %d replicas; `shoal status %s` shows the members' shares\n", root, replicas, root)
			}
			return nil
		},
	}
	c.Flags().IntVar(&replicas, "replicas", 2, "how many members keep each chunk")
	c.Flags().BoolVar(&remove, "remove", false, "take the image out of the group's care")
	return c
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status CID",
		Short: "Show which member of the daemon's group keeps what share of a sharded image",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := transport.ParseCID(args[0])
			if err != nil {
				return usageError{err}
			}
			client, err := g.groupDaemon(cmd.Context(), "status")
			if err != nil {
				return err
			}
			defer client.Close()
			st, err := client.Status(cmd.Context(), root)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "image %s in group %s: %d chunks, %s, %d replicas\n", st.Root, st.Group, st.Chunks, humanBytes(int64(st.Size)), st.Replicas)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER\tSHARE\tCHUNKS\tBYTES")
			for _, m := range st.Members {
				if m.Error != "" {
					fmt.Fprintf(tw, "%s\t-\t-\t%s\n", m.Peer, m.Error)
					continue
				}
				fmt.Fprintf(tw, "%s\t%.1f%%\t%d\t%s\n", m.Peer, 100*m.Share, m.HeldChunks, humanBytes(int64(m.HeldBytes)))
			}
			tw.Flush()
			fmt.Fprintf(out, "%d of %d chunks kept by a member, %d by %d or more\n", st.Covered, st.Chunks, st.Replicated, st.Replicas)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
