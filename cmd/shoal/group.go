package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/group"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"github.com/spf13/cobra"
)

// groupDaemon is the running daemon, for commands only a group member
// can answer.
func (g *globals) groupDaemon(ctx context.Context, what string) (*api.Client, error) {
	if err := g.ensureInit(); err != nil {
		return nil, err
	}
	cfg, err := config.LoadConfig(g.home)
	if err != nil {
		return nil, err
	}
	c, err := api.Dial(ctx, cfg.SocketPath(g.home))
	if errors.Is(err, api.ErrNoDaemon) {
		return nil, fmt.Errorf("%s needs a running daemon in a group: start `shoal daemon --group NAME`", what)
	}
	return c, err
}

func shardCmd(g *globals) *cobra.Command {
	var replicas int
	var remove bool
	c := &cobra.Command{
		Use: "shard CID",
		Example: `  shoal shard bafk...                 # each chunk kept by 2 members of the daemon's group
  shoal shard bafk... --replicas 3
  shoal shard bafk... --remove`,
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
			res, err := client.Shard(cmd.Context(), root, replicas)
			if err != nil {
				return err
			}
			if r := res.Replaced; r != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "the group held a record of %s dated %s, ahead of this member's clock (%d replicas); this one is dated after it and replaces it\n", root, r.Updated.Format(time.RFC3339Nano), r.Replicas)
			}
			if r := res.Newer; r != nil {
				return fmt.Errorf("a member holds a newer record of %s (%d replicas, dated %s), which overrides this one; `shoal shard` again replaces it", root, r.Replicas, r.Updated.Format(time.RFC3339Nano))
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
		Use: "status CID",
		Example: `  shoal status bafk...
  shoal status bafk... --json`,
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

func groupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "The daemon's group: its key",
	}
	c.AddCommand(keyCmd("Print a new group key, which members of a group prove they hold",
		`Print a new random group key. Every member of a group (shoal daemon
--group NAME) needs the same key in $SHOAL_HOME/group.key ([group] key),
readable by its owner only: members prove to each other that they hold
it, and a peer that does not is no member. Make it once and give it to
every member over a secure channel, as any secret.`,
		`  shoal group key > group.key
  install -m 0600 group.key $SHOAL_HOME/group.key   # on every member`, group.NewKey))
	return c
}
