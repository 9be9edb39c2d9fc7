package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/ipfs/go-datastore/query"
)

// A hold pins blobs under a name for content a node keeps outside any
// image record: the registry's uploaded blobs and manifests, say. Holds
// count as uses of a blob just as image records do, so a blob stays pinned
// while either names it.
var holdsPrefix = ds.NewKey("/shoal/holds")

func holdKey(name string) ds.Key { return holdsPrefix.Child(ds.NewKey(name)) }

// Hold pins blobs under name, replacing what name held before; blobs it no
// longer names are unpinned unless something else names them.
func (n *Node) Hold(ctx context.Context, name string, blobs ...cid.Cid) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	if err := n.pinBlobs(ctx, "shoal-hold:"+name, blobs); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	old, err := n.held(ctx, name)
	if err != nil {
		return err
	}
	ss := make([]string, len(blobs))
	for i, c := range blobs {
		ss[i] = c.String()
	}
	data, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	if err := n.meta.Put(ctx, holdKey(name), data); err != nil {
		return err
	}
	if err := n.meta.Sync(ctx, holdsPrefix); err != nil {
		return err
	}
	return n.unpinUnused(ctx, old)
}

// Release drops the hold name; blobs nothing else names are unpinned, and
// their blocks go at the next GC. Releasing an unknown name does nothing.
func (n *Node) Release(ctx context.Context, name string) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	old, err := n.held(ctx, name)
	if err != nil || old == nil {
		return err
	}
	if err := n.meta.Delete(ctx, holdKey(name)); err != nil {
		return err
	}
	if err := n.meta.Sync(ctx, holdsPrefix); err != nil {
		return err
	}
	return n.unpinUnused(ctx, old)
}

func (n *Node) held(ctx context.Context, name string) ([]string, error) {
	data, err := n.meta.Get(ctx, holdKey(name))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var blobs []string
	if err := json.Unmarshal(data, &blobs); err != nil {
		return nil, fmt.Errorf("hold %s: %w", name, err)
	}
	return blobs, nil
}

func (n *Node) eachHold(ctx context.Context, f func(name string, blobs []string)) error {
	res, err := n.meta.Query(ctx, query.Query{Prefix: holdsPrefix.String()})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		var blobs []string
		if err := json.Unmarshal(r.Value, &blobs); err != nil {
			return fmt.Errorf("hold %s: %w", r.Key, err)
		}
		f(strings.TrimPrefix(r.Key, holdsPrefix.String()+"/"), blobs)
	}
	return nil
}

func checkHoldName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return fmt.Errorf("hold name %q: want non-empty path segments", name)
	}
	return nil
}

// Metadata is the part of the node's metadata store under prefix, for a
// component that keeps records of its own (the registry's tags, say).
// Writes are durable once Sync returns.
func (n *Node) Metadata(prefix string) ds.Batching {
	return namespace.Wrap(n.meta, ds.NewKey("/shoal/components").ChildString(prefix))
}
