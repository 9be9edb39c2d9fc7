// Package api is what shoal's commands do with a node: one API whether
// the node is embedded in the command or owned by a daemon, the daemon's
// server of it on a unix socket, and the client of that socket. The
// daemon's wiring of its other servers is package daemon.
package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/config"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// API is what shoal commands do with a node.
type API interface {
	image.Store
	store.ReaderAt
	store.Catalog
	store.Collector
	store.Verifier
	store.Identifier
	Connect(ctx context.Context, peers ...peer.AddrInfo) error
	Close() error
}

var _ API = (*node.Node)(nil)
var _ API = (*Client)(nil)

// The embedded node hashes a pushed or pulled blob's digest with its
// leaves.
var _ image.HashingAdder = (*node.Node)(nil)
var _ image.HashingCat = (*node.Node)(nil)

// Both spare what a push or pull stores from a collection until it is
// pinned.
var _ image.Leaser = (*node.Node)(nil)
var _ image.Leaser = (*Client)(nil)

// Both keep whole blobs as files that pulls into OCI layouts link.
var _ image.BlobFiles = (*node.Node)(nil)
var _ image.BlobFiles = (*Client)(nil)

// ErrNoDaemon means no daemon answers on the socket.
var ErrNoDaemon = errkind.New("no daemon running", errdefs.ErrUnavailable)

// Dial returns a client of the daemon on socket, or ErrNoDaemon.
func Dial(ctx context.Context, socket string) (*Client, error) {
	c := &Client{
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableCompression: true,
		}},
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.ID(pctx); err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return nil, ErrNoDaemon
		}
		return nil, err
	}
	return c, nil
}

// Open returns the API of the daemon on the home's socket if one runs,
// else opens the node in this process.
func Open(ctx context.Context, home string, opts node.Options) (API, error) {
	cfg, err := config.LoadConfig(home)
	if err != nil {
		return nil, err
	}
	c, err := Dial(ctx, cfg.SocketPath(home))
	if err == nil {
		if len(opts.Peers) > 0 {
			if _, err := node.ParsePeerAddrs(opts.Peers); err != nil {
				c.Close()
				return nil, err
			}
			if err := c.connect(ctx, opts.Peers); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	if !errors.Is(err, ErrNoDaemon) {
		return nil, err
	}
	return node.Open(ctx, home, opts)
}

type errorBody struct {
	Message string `json:"Message"`
	// Kind is the error's kind (errkind.Name), which the client restores.
	Kind string `json:"Kind,omitempty"`
}

func closeBody(r io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	r.Close()
}
