package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/group"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// Client talks to a running daemon.
// A daemon's client is every role of package store that commands use;
// holds are the daemon's own business (its registry's, mirror's and
// snapshotter's), not its clients'.
var (
	_ store.Adder      = (*Client)(nil)
	_ store.Reader     = (*Client)(nil)
	_ store.ReaderAt   = (*Client)(nil)
	_ store.Pinner     = (*Client)(nil)
	_ store.Catalog    = (*Client)(nil)
	_ store.Collector  = (*Client)(nil)
	_ store.Verifier   = (*Client)(nil)
	_ store.Identifier = (*Client)(nil)
)

type Client struct {
	http *http.Client
}

// base is a placeholder host: the transport always dials the socket.
const base = "http://shoal"

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer closeBody(resp.Body)
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon %s %s: %w", method, path, err)
	}
	return nil
}

// send returns the response of a successful request; any other status
// becomes an error carrying the daemon's message.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer closeBody(resp.Body)
	var eb errorBody
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb)
	if eb.Message == "" {
		eb.Message = resp.Status
	}
	kind := errkind.Parse(eb.Kind)
	if kind == nil {
		kind = errdefs.ErrUnknown
	}
	return nil, errkind.New(eb.Message, kind)
}

func (c *Client) ID(ctx context.Context) (store.Identity, error) {
	var id store.Identity
	return id, c.do(ctx, http.MethodGet, "/v0/id", nil, &id)
}

func (c *Client) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	var res addResult
	if err := c.do(ctx, http.MethodPost, "/v0/add", r, &res); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(res.Cid)
}

// AddChunks stores chunks as one blob, each chunk a block of its own,
// streaming them to the daemon as they come.
func (c *Client) AddChunks(ctx context.Context, chunks blob.Chunks) (cid.Cid, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeChunks(pw, chunks)) }()
	defer pr.Close()
	var res addResult
	if err := c.do(ctx, http.MethodPost, "/v0/add?chunks=framed", pr, &res); err != nil {
		return cid.Undef, err
	}
	return cid.Decode(res.Cid)
}

func (c *Client) Cat(ctx context.Context, root cid.Cid) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v0/cat/"+root.String(), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ReadBlobAt reads len(p) bytes of blob root from off through the daemon.
func (c *Client) ReadBlobAt(ctx context.Context, root cid.Cid, p []byte, off int64) (int, error) {
	resp, err := c.send(ctx, http.MethodGet, fmt.Sprintf("/v0/read/%s?offset=%d&length=%d", root, off, len(p)), nil)
	if err != nil {
		return 0, err
	}
	defer closeBody(resp.Body)
	k, err := io.ReadFull(resp.Body, p)
	if errors.Is(err, io.ErrUnexpectedEOF) || (err == nil && k < len(p)) || (errors.Is(err, io.EOF) && k == 0 && len(p) > 0) {
		err = io.EOF
	}
	return k, err
}

func (c *Client) PinImage(ctx context.Context, img catalog.Image) error {
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v0/images", bytes.NewReader(b), nil)
}

func (c *Client) Images(ctx context.Context) ([]catalog.Image, error) {
	var imgs []catalog.Image
	return imgs, c.do(ctx, http.MethodGet, "/v0/images", nil, &imgs)
}

func (c *Client) Image(ctx context.Context, root cid.Cid) (catalog.Image, error) {
	var img catalog.Image
	return img, c.do(ctx, http.MethodGet, "/v0/images/"+root.String(), nil, &img)
}

func (c *Client) RemoveImage(ctx context.Context, root cid.Cid) error {
	return c.do(ctx, http.MethodDelete, "/v0/images/"+root.String(), nil, nil)
}

// BlobFile returns the daemon's file of the whole blob root, which this
// machine's commands can link (image.BlobFiles).
func (c *Client) BlobFile(ctx context.Context, root cid.Cid) (string, int64, bool, error) {
	var reply blobFileReply
	err := c.do(ctx, http.MethodGet, "/v0/blobfile/"+root.String(), nil, &reply)
	return reply.Path, reply.Size, reply.OK, err
}

func (c *Client) GC(ctx context.Context) (store.GCResult, error) {
	var res store.GCResult
	return res, c.do(ctx, http.MethodPost, "/v0/gc", nil, &res)
}

// Verify checks the daemon's store (node.Node.Verify).
func (c *Client) Verify(ctx context.Context, repair bool) (store.VerifyResult, error) {
	var res store.VerifyResult
	return res, c.do(ctx, http.MethodPost, "/v0/verify?repair="+strconv.FormatBool(repair), nil, &res)
}

func (c *Client) Connect(ctx context.Context, peers ...peer.AddrInfo) error {
	var addrs []string
	for _, p := range peers {
		as, err := peer.AddrInfoToP2pAddrs(&p)
		if err != nil {
			return err
		}
		for _, a := range as {
			addrs = append(addrs, a.String())
		}
	}
	return c.connect(ctx, addrs)
}

// connect has the daemon connect to peers given with or without IDs
// (node.ParsePeerAddrs) and keep them connected.
func (c *Client) connect(ctx context.Context, addrs []string) error {
	b, err := json.Marshal(connectRequest{Addrs: addrs})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v0/connect", bytes.NewReader(b), nil)
}

// Close releases idle connections; the daemon keeps running.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Shard puts the image at root under the daemon's group with replicas
// copies of each chunk; 0 takes it out.
func (c *Client) Shard(ctx context.Context, root cid.Cid, replicas int) (group.ShardResult, error) {
	var res group.ShardResult
	body, err := json.Marshal(ShardRequest{Root: root.String(), Replicas: replicas})
	if err != nil {
		return res, err
	}
	return res, c.do(ctx, http.MethodPost, "/v0/shard", bytes.NewReader(body), &res)
}

// Status is how the image at root is spread over the daemon's group.
func (c *Client) Status(ctx context.Context, root cid.Cid) (group.Status, error) {
	var st group.Status
	return st, c.do(ctx, http.MethodGet, "/v0/status/"+root.String(), nil, &st)
}

// ForgetTag drops the mirror's record of image (REGISTRY/REPOSITORY:TAG)
// on the daemon and, unless local, on its peers.
func (c *Client) ForgetTag(ctx context.Context, image string, local bool) error {
	body, err := json.Marshal(ForgetRequest{Image: image, Local: local})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v0/mirror/forget", bytes.NewReader(body), nil)
}
