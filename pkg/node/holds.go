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

// A block hold keeps single blocks rather than whole blobs: the share of
// an image's blocks a group member stores (package group). GC keeps every
// block a block hold names; no pin is involved.
var blockHoldsPrefix = ds.NewKey("/shoal/blockholds")

// HoldBlocks keeps blocks under name, replacing what name held before;
// blocks it no longer names go at the next GC unless something else keeps
// them. Every block must be stored here already (see Fetch).
func (n *Node) HoldBlocks(ctx context.Context, name string, blocks ...cid.Cid) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	ss := make([]string, len(blocks))
	for i, c := range blocks {
		if has, err := n.bstore.Has(ctx, c); err != nil {
			return err
		} else if !has {
			return fmt.Errorf("hold %s: block %s is not stored here", name, c)
		}
		ss[i] = c.String()
	}
	if err := n.syncBlocks(); err != nil {
		return err
	}
	data, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	if err := n.meta.Put(ctx, blockHoldsPrefix.Child(ds.NewKey(name)), data); err != nil {
		return err
	}
	return n.meta.Sync(ctx, blockHoldsPrefix)
}

// heldBlocks calls f with every block that a block hold names.
func (n *Node) heldBlocks(ctx context.Context, f func(cid.Cid)) error {
	return n.eachList(ctx, blockHoldsPrefix, func(name string, ss []string) error {
		cs, err := decodeCIDs(ss)
		if err != nil {
			return fmt.Errorf("block hold %s: %w", name, err)
		}
		for _, c := range cs {
			f(c)
		}
		return nil
	})
}

// Release drops the hold name, of blobs or of blocks; blobs nothing else
// names are unpinned, and their blocks go at the next GC. Releasing an
// unknown name does nothing.
func (n *Node) Release(ctx context.Context, name string) error {
	if err := checkHoldName(name); err != nil {
		return err
	}
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	if err := n.meta.Delete(ctx, blockHoldsPrefix.Child(ds.NewKey(name))); err != nil {
		return err
	}
	if err := n.meta.Sync(ctx, blockHoldsPrefix); err != nil {
		return err
	}
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
	return n.eachList(ctx, holdsPrefix, func(name string, blobs []string) error {
		f(name, blobs)
		return nil
	})
}

// eachList calls f with every list of CIDs stored under prefix, by name.
func (n *Node) eachList(ctx context.Context, prefix ds.Key, f func(name string, cids []string) error) error {
	res, err := n.meta.Query(ctx, query.Query{Prefix: prefix.String()})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		name := strings.TrimPrefix(r.Key, prefix.String()+"/")
		var cids []string
		if err := json.Unmarshal(r.Value, &cids); err != nil {
			return fmt.Errorf("hold %s: %w", name, err)
		}
		if err := f(name, cids); err != nil {
			return err
		}
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
