// Command shoal distributes container images peer-to-peer over IPFS.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/api"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/spf13/cobra"
)

// usageError marks errors in how the command was called (exit code
// errkind.ExitUsage); other errors exit with the code of their kind.
type usageError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal:", err)
		// Through the daemon's socket the error is its text.
		if errors.Is(err, image.ErrTimeout) || strings.Contains(err.Error(), image.ErrTimeout.Error()) {
			fmt.Fprintln(os.Stderr, "shoal: check that a peer holding it is reachable: --peer MULTIADDR/p2p/ID, or a daemon connected to one")
		}
		var ue usageError
		if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
			os.Exit(errkind.ExitUsage)
		}
		os.Exit(errkind.ExitCode(err))
	}
}

// globals are the flags every command shares.
type globals struct {
	home    string
	peers   []string
	verbose bool
	// logFormat and logLevel shape what the logger writes (--log-format,
	// --log-level); an empty level is the command's own default.
	logFormat string
	logLevel  string
	// ipfsAPI, when set, runs commands against that kubo daemon instead
	// of the embedded node (kubo.go).
	ipfsAPI string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Container images distributed peer-to-peer over IPFS",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionText(),
	}
	root.SetVersionTemplate("{{.Version}}")
	// A malformed --peer is a usage error, whichever command took it.
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if _, err := node.ParsePeerAddrs(g.peers); err != nil {
			return usageError{fmt.Errorf("--peer: %w", err)}
		}
		if g.logFormat != "text" && g.logFormat != "json" {
			return usageError{fmt.Errorf("--log-format %q: want text or json", g.logFormat)}
		}
		if g.logLevel != "" {
			var l slog.Level
			if err := l.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
			}
		}
		return nil
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.home, "home", config.DefaultHome(), "state directory ($SHOAL_HOME)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log what the node does to stderr (--log-level debug)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "how logs are written to stderr: text (key=value) or json (one object a line)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "least level logged: debug, info, warn or error (default: info for the daemon, warn for other commands)")
	root.PersistentFlags().StringVar(&g.ipfsAPI, "ipfs-api", os.Getenv("SHOAL_IPFS_API"), "use the kubo daemon whose RPC API is at this MULTIADDR instead of the embedded node; \"auto\" reads $IPFS_PATH/api ($SHOAL_IPFS_API)")
	root.AddCommand(
		initCmd(g), idCmd(g), daemonCmd(g),
		pushCmd(g), pullCmd(g), inspectCmd(g), indexCmd(g),
		mountCmd(g), unmountCmd(g),
		imagesCmd(g), rmCmd(g), gcCmd(g), verifyCmd(g),
		containerdCmd(g), swarmCmd(g), groupCmd(g), shardCmd(g), statusCmd(g), mirrorCmd(g), versionCmd(),
	)
	return root
}

// addPeerFlag adds --peer to a command that goes online.
func addPeerFlag(c *cobra.Command, g *globals) {
	c.Flags().StringArrayVar(&g.peers, "peer", nil, "connect to this peer first: MULTIADDR/p2p/ID, or a TCP address without an ID (/dns4/NAME/tcp/PORT) to find every peer it resolves to (repeatable)")
}

// logger writes warnings to stderr, and everything with --verbose.
func (g *globals) logger() *slog.Logger { return g.loggerAt(slog.LevelWarn) }

// daemonLogger also says what the daemon is doing.
func (g *globals) daemonLogger() *slog.Logger { return g.loggerAt(slog.LevelInfo) }

func (g *globals) loggerAt(level slog.Level) *slog.Logger {
	if g.verbose {
		level = slog.LevelDebug
	}
	if g.logLevel != "" {
		// Checked by the root's PersistentPreRunE.
		_ = level.UnmarshalText([]byte(g.logLevel))
	}
	opts := &slog.HandlerOptions{Level: level}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// api returns the running daemon's API, or opens the store here. Commands
// that talk to peers pass online; they listen where the daemon would, but
// on free ports, so they never collide with a daemon.
func (g *globals) api(ctx context.Context, online bool) (api.API, error) {
	if g.ipfsAPI != "" {
		return g.kubo(ctx)
	}
	if err := g.ensureInit(); err != nil {
		return nil, err
	}
	opts := node.Options{Online: online, Peers: g.peers, Logger: g.logger(), LockWait: 3 * time.Second}
	if online {
		cfg, err := config.LoadConfig(g.home)
		if err != nil {
			return nil, err
		}
		for _, a := range cfg.Swarm.Listen {
			opts.Listen = append(opts.Listen, anyPort.ReplaceAllString(a, "/$1/0"))
		}
	}
	return api.Open(ctx, g.home, opts)
}

var anyPort = regexp.MustCompile(`/(tcp|udp)/[0-9]+`)

// withAPI runs f with the node's API and closes it after.
func (g *globals) withAPI(ctx context.Context, online bool, f func(api.API) error) error {
	st, err := g.api(ctx, online)
	if err != nil {
		return err
	}
	defer st.Close()
	return f(st)
}

// ensureInit initialises the home on first use, as kubo's commands do not
// but every shoal user would expect.
func (g *globals) ensureInit() error {
	_, err := config.Init(g.home, config.DefaultConfig())
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{fmt.Errorf("%w\nusage: %s", err, cmd.UseLine())}
		}
		return nil
	}
}
