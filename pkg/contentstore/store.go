// Package contentstore is containerd's content store kept in IPFS: every
// blob containerd commits is added to the node under the CID shoal's
// image format gives it, pinned while containerd keeps it, and served to
// peers like any other block.
//
// containerd's metadata keeps each namespace's view and labels on top of
// one backing store; this is that backing store, served to containerd as
// a content proxy plugin.
package contentstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"google.golang.org/grpc"
)

// GRPCOptions are what a gRPC server of the store needs: containerd's
// content proxy writes in messages of up to 8 MiB, and containerd itself
// takes 16.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(16 << 20), grpc.MaxSendMsgSize(16 << 20)}
}

// Node is what the store needs of a shoal node.
type Node interface {
	store.Adder
	store.ReaderAt
	store.Holder
}

// Store implements containerd's content.Store.
type Store struct {
	node   Node
	meta   ds.Batching
	ingest string // directory of ingests in progress

	mu sync.Mutex // guards records' read-modify-write and locked
	// locked are the refs a writer has open.
	locked map[string]bool
}

var _ content.Store = (*Store)(nil)

// New opens the store: records in meta, ingests under ingestDir.
func New(n Node, meta ds.Batching, ingestDir string) (*Store, error) {
	s := &Store{node: n, meta: meta, ingest: ingestDir, locked: map[string]bool{}}
	if err := s.makeIngestDir(); err != nil {
		return nil, err
	}
	return s, nil
}

// record is what the store keeps of a blob.
type record struct {
	CID     string            `json:"cid"`
	Size    int64             `json:"size"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func (r record) info(d digest.Digest) content.Info {
	return content.Info{Digest: d, Size: r.Size, CreatedAt: r.Created, UpdatedAt: r.Updated, Labels: r.Labels}
}

var blobsKey = ds.NewKey("/blob")

func recordKey(d digest.Digest) ds.Key { return blobsKey.ChildString(d.String()) }

// holdName names the pin that keeps blob d while containerd has it.
func holdName(d digest.Digest) string { return "containerd-content/" + d.String() }

func (s *Store) get(ctx context.Context, d digest.Digest) (record, error) {
	if err := d.Validate(); err != nil {
		return record{}, fmt.Errorf("digest %q: %v: %w", d, err, errdefs.ErrInvalidArgument)
	}
	data, err := s.meta.Get(ctx, recordKey(d))
	if errors.Is(err, ds.ErrNotFound) {
		return record{}, fmt.Errorf("content %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return record{}, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, fmt.Errorf("content %s: record: %w", d, err)
	}
	return r, nil
}

func (s *Store) put(ctx context.Context, d digest.Digest, r record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.meta.Put(ctx, recordKey(d), data); err != nil {
		return err
	}
	return s.meta.Sync(ctx, recordKey(d))
}

func (s *Store) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	r, err := s.get(ctx, d)
	if err != nil {
		return content.Info{}, err
	}
	return r.info(d), nil
}

// Update changes a blob's labels: all of them, or those fieldpaths name
// ("labels", "labels.KEY").
func (s *Store) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.get(ctx, info.Digest)
	if err != nil {
		return content.Info{}, err
	}
	labels := map[string]string{}
	for k, v := range r.Labels {
		labels[k] = v
	}
	if len(fieldpaths) == 0 {
		labels = info.Labels
	}
	for _, path := range fieldpaths {
		switch {
		case path == "labels":
			labels = info.Labels
		case strings.HasPrefix(path, "labels."):
			key := strings.TrimPrefix(path, "labels.")
			if v, ok := info.Labels[key]; ok {
				if labels == nil {
					labels = map[string]string{}
				}
				labels[key] = v
			} else {
				delete(labels, key)
			}
		default:
			return content.Info{}, fmt.Errorf("cannot update %q of content %s: %w", path, info.Digest, errdefs.ErrInvalidArgument)
		}
	}
	if len(labels) == 0 {
		labels = nil
	}
	r.Labels = labels
	r.Updated = time.Now().UTC()
	if err := s.put(ctx, info.Digest, r); err != nil {
		return content.Info{}, err
	}
	return r.info(info.Digest), nil
}

// Walk calls fn for every blob that matches any of the filters.
func (s *Store) Walk(ctx context.Context, fn content.WalkFunc, fs ...string) error {
	filter, err := filters.ParseAll(fs...)
	if err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	res, err := s.meta.Query(ctx, query.Query{Prefix: blobsKey.String()})
	if err != nil {
		return err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		d := digest.Digest(ds.RawKey(e.Key).BaseNamespace())
		var r record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			return fmt.Errorf("content %s: record: %w", d, err)
		}
		info := r.info(d)
		if !filter.Match(infoAdaptor(info)) {
			continue
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// infoAdaptor lets containerd's filters see a blob's digest, size and
// labels.
func infoAdaptor(info content.Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "digest":
			return info.Digest.String(), true
		case "size":
			return fmt.Sprint(info.Size), true
		case "labels":
			v, ok := info.Labels[strings.Join(fieldpath[1:], ".")]
			return v, ok
		}
		return "", false
	})
}

// Delete forgets a blob and unpins it: its blocks go at the node's next GC
// unless an image or another hold keeps them.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(ctx, d); err != nil {
		return err
	}
	if err := s.node.Release(ctx, holdName(d)); err != nil {
		return fmt.Errorf("delete %s: %w", d, err)
	}
	if err := s.meta.Delete(ctx, recordKey(d)); err != nil {
		return fmt.Errorf("delete %s: %w", d, err)
	}
	return s.meta.Sync(ctx, recordKey(d))
}

// CID is the CID of a blob in the store, for peers to fetch it by.
func (s *Store) CID(ctx context.Context, d digest.Digest) (cid.Cid, error) {
	r, err := s.get(ctx, d)
	if err != nil {
		return cid.Undef, err
	}
	return cid.Decode(r.CID)
}

// ReaderAt reads a blob from the node, any part of it without the rest.
func (s *Store) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	r, err := s.get(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	c, err := cid.Decode(r.CID)
	if err != nil {
		return nil, fmt.Errorf("content %s: record CID %q: %w", desc.Digest, r.CID, err)
	}
	// The reader outlives this call: containerd reads through it later.
	return &readerAt{ctx: context.WithoutCancel(ctx), node: s.node, c: c, size: r.Size}, nil
}

type readerAt struct {
	ctx  context.Context
	node Node
	c    cid.Cid
	size int64
}

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := r.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n, err := r.node.ReadBlobAt(r.ctx, r.c, p, off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

func (r *readerAt) Size() int64  { return r.size }
func (r *readerAt) Close() error { return nil }
