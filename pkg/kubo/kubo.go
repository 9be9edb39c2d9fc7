// Package kubo runs shoal against an existing kubo daemon instead of the
// embedded node, for users who already run one: it is a client of kubo's
// HTTP RPC API that implements the operations shoal's commands and its
// registry need (api.API, registry.Store).
//
// It is a package of its own because it owns a mapping, not just calls:
// blobs are added with the UnixFS parameters of shoal's layout, so their
// CIDs are the ones shoal gives; shoal's pins are kubo pins named "shoal:…",
// so kubo's own GC keeps what shoal keeps; and shoal's image records and
// holds are JSON files in kubo's MFS under /shoal, which kubo's GC keeps
// too. The HTTP client is written here rather than taken from kubo's
// module, whose dependency graph shoal would then have to follow.
package kubo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Client is shoal's store in a kubo daemon.
// A kubo node is a whole store: every role of package store. Verify
// says errdefs.ErrNotImplemented: kubo checks its own blocks.
var (
	_ store.Adder      = (*Client)(nil)
	_ store.Reader     = (*Client)(nil)
	_ store.ReaderAt   = (*Client)(nil)
	_ store.Pinner     = (*Client)(nil)
	_ store.Catalog    = (*Client)(nil)
	_ store.Holder     = (*Client)(nil)
	_ store.Collector  = (*Client)(nil)
	_ store.Verifier   = (*Client)(nil)
	_ store.Identifier = (*Client)(nil)
)

type Client struct {
	rpc    *rpc
	layout blob.Layout
	// pinMu orders this process's pin changes, as the node's lock does:
	// a removal never unpins a blob an image being pinned has just named.
	pinMu sync.Mutex
}

// Dial returns a client of the kubo daemon at addr that adds blobs in
// layout, once the daemon has answered.
func Dial(ctx context.Context, addr Address, layout blob.Layout) (*Client, error) {
	if layout.ChunkSize <= 0 || layout.MaxLinks < 2 {
		return nil, fmt.Errorf("invalid UnixFS layout %+v", layout)
	}
	c := &Client{rpc: newRPC(addr), layout: layout}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var v struct{ Version string }
	if err := one(pctx, c.rpc, "version", nil, &v); err != nil {
		return nil, err
	}
	return c, nil
}

// Address is the API address of the daemon.
func (c *Client) Address() Address { return c.rpc.addr }

// Close releases idle connections; kubo keeps running.
func (c *Client) Close() error {
	c.rpc.http.CloseIdleConnections()
	return nil
}

// ID is kubo's peer ID and addresses.
func (c *Client) ID(ctx context.Context) (store.Identity, error) {
	var out struct {
		ID        string
		Addresses []string
	}
	if err := one(ctx, c.rpc, "id", nil, &out); err != nil {
		return store.Identity{}, err
	}
	if out.Addresses == nil {
		out.Addresses = []string{}
	}
	return store.Identity{ID: out.ID, Addresses: out.Addresses}, nil
}

// addArgs are the parameters of `ipfs add` that give a blob the CID
// blob.Add gives it in layout: CIDv1, raw leaves, sha2-256, fixed-size
// chunks, a balanced DAG of at most MaxLinks links a node. They are all
// given, so kubo's Import config changes nothing. Blobs are not pinned
// here: PinImage and Hold pin what they keep, as on the embedded node.
func addArgs(l blob.Layout) url.Values {
	return url.Values{
		"cid-version":    {"1"},
		"raw-leaves":     {"true"},
		"hash":           {"sha2-256"},
		"chunker":        {"size-" + strconv.FormatInt(l.ChunkSize, 10)},
		"max-file-links": {strconv.Itoa(l.MaxLinks)},
		"trickle":        {"false"},
		"inline":         {"false"},
		"pin":            {"false"},
		"progress":       {"false"},
		"quieter":        {"true"},
	}
}

// Add adds r to kubo as a UnixFS file in the client's layout.
func (c *Client) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	sent := make(chan error, 1) // what went wrong reading r, if anything
	go func() {
		part, err := mw.CreateFormFile("file", "blob")
		if err == nil {
			_, err = io.Copy(part, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
		sent <- err
	}()
	hash, err := c.add(ctx, pr, mw.FormDataContentType())
	pr.Close() // ends the copy if kubo stopped reading early
	if rerr := <-sent; rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) && err != nil {
		return cid.Undef, rerr // the reader's failure, not its consequence
	}
	if err != nil {
		return cid.Undef, err
	}
	got, err := cid.Decode(hash)
	if err != nil {
		return cid.Undef, fmt.Errorf("kubo add: no CID in its answer (%q): %w", hash, err)
	}
	return got, nil
}

// AddChunks adds chunks as one UnixFS file whose leaves are the chunks
// (blob.AddChunks, a split layer index's windows). kubo's add cuts only
// at fixed sizes, so the DAG is built here, in memory, and imported as a
// CAR: its CID is the one the embedded node gives the same chunks.
func (c *Client) AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	root, err := blob.AddChunks(ctx, merkledag.NewDAGService(blockservice.New(bs, nil)), chunks, c.layout.MaxLinks)
	if err != nil {
		return cid.Undef, err
	}
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		return cid.Undef, err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, err := mw.CreateFormFile("file", "chunks.car")
	if err != nil {
		return cid.Undef, err
	}
	car, err := storage.NewWritable(part, []cid.Cid{root}, carv2.WriteAsCarV1(true))
	if err != nil {
		return cid.Undef, err
	}
	for k := range keys {
		b, err := bs.Get(ctx, k)
		if err != nil {
			return cid.Undef, err
		}
		if err := car.Put(ctx, k.KeyString(), b.RawData()); err != nil {
			return cid.Undef, err
		}
	}
	if err := car.Finalize(); err != nil {
		return cid.Undef, err
	}
	if err := mw.Close(); err != nil {
		return cid.Undef, err
	}
	// Pinned with the image that names it, as every blob is.
	out, err := c.rpc.call(ctx, "dag/import", url.Values{"pin-roots": {"false"}}, &body, mw.FormDataContentType())
	if err != nil {
		return cid.Undef, err
	}
	defer out.Close()
	if err := decodeStream("dag/import", out, func(struct{}) {}); err != nil {
		return cid.Undef, err
	}
	return root, nil
}

func (c *Client) add(ctx context.Context, body io.Reader, contentType string) (string, error) {
	out, err := c.rpc.call(ctx, "add", addArgs(c.layout), body, contentType)
	if err != nil {
		return "", err
	}
	defer out.Close()
	var hash string
	err = decodeStream("add", out, func(ev struct{ Hash string }) { hash = ev.Hash })
	return hash, err
}

// Cat reads a blob; kubo fetches from its peers what it does not hold,
// and keeps it. A blob nobody sends blocks until ctx ends.
func (c *Client) Cat(ctx context.Context, root cid.Cid) (io.ReadCloser, error) {
	return c.rpc.call(ctx, "cat", url.Values{"arg": {root.String()}, "progress": {"false"}}, nil, "")
}

// ReadBlobAt reads len(p) bytes of blob root from off; kubo fetches only
// the blocks that hold them. It returns io.EOF with fewer bytes at the end
// of the blob.
func (c *Client) ReadBlobAt(ctx context.Context, root cid.Cid, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", root, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	out, err := c.rpc.call(ctx, "cat", url.Values{
		"arg":      {root.String()},
		"offset":   {strconv.FormatInt(off, 10)},
		"length":   {strconv.Itoa(len(p))},
		"progress": {"false"},
	}, nil, "")
	if err != nil {
		return 0, err
	}
	defer out.Close()
	n, err := io.ReadFull(out, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = io.EOF
	}
	return n, err
}

// Connect asks kubo to connect to peers.
func (c *Client) Connect(ctx context.Context, peers ...peer.AddrInfo) error {
	args := url.Values{}
	for _, p := range peers {
		addrs, err := peer.AddrInfoToP2pAddrs(&p)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			args.Add("arg", a.String())
		}
	}
	if len(args) == 0 {
		return nil
	}
	return run(ctx, c.rpc, "swarm/connect", args)
}
