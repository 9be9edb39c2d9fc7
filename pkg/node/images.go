package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/containerd/errdefs"
	pinner "github.com/ipfs/boxo/pinning/pinner"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
)

var imagesPrefix = ds.NewKey("/shoal/images")

func imageKey(root cid.Cid) ds.Key { return imagesPrefix.ChildString(root.String()) }

// PinImage pins every blob of an image recursively, then records the image.
// The record is written last, so an image is listed only once all of it is
// pinned.
func (n *Node) PinImage(ctx context.Context, img catalog.Image) error {
	root, err := cid.Decode(img.CID)
	if err != nil {
		return errkind.New(fmt.Sprintf("pin image: root %q: %v", img.CID, err), errdefs.ErrInvalidArgument)
	}
	blobs, err := decodeCIDs(img.Blobs)
	if err != nil {
		return errkind.New(fmt.Sprintf("pin image %s: %v", root, err), errdefs.ErrInvalidArgument)
	}
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	if err := n.pinBlobs(ctx, "shoal:"+img.CID, blobs); err != nil {
		return fmt.Errorf("pin image %s: %w", root, err)
	}
	if old, err := n.Image(ctx, root); err == nil {
		img = catalog.Merge(old, img)
	}
	data, err := json.Marshal(img)
	if err != nil {
		return err
	}
	if err := n.meta.Put(ctx, imageKey(root), data); err != nil {
		return err
	}
	if err := n.meta.Sync(ctx, imagesPrefix); err != nil {
		return err
	}
	n.Provide(append([]cid.Cid{root}, blobs...)...)
	return nil
}

// Images lists the pinned images, newest first.
func (n *Node) Images(ctx context.Context) ([]catalog.Image, error) {
	res, err := n.meta.Query(ctx, query.Query{Prefix: imagesPrefix.String()})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	out := []catalog.Image{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		var img catalog.Image
		if err := json.Unmarshal(r.Value, &img); err != nil {
			return nil, fmt.Errorf("image record %s: %w", r.Key, err)
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Image returns the record of one pinned image.
func (n *Node) Image(ctx context.Context, root cid.Cid) (catalog.Image, error) {
	data, err := n.meta.Get(ctx, imageKey(root))
	if errors.Is(err, ds.ErrNotFound) {
		return catalog.Image{}, fmt.Errorf("image %s: %w", root, errdefs.ErrNotFound)
	}
	if err != nil {
		return catalog.Image{}, err
	}
	var img catalog.Image
	return img, json.Unmarshal(data, &img)
}

// RemoveImage forgets an image and unpins those of its blobs that no other
// pinned image uses. Their blocks go at the next GC.
func (n *Node) RemoveImage(ctx context.Context, root cid.Cid) error {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	img, err := n.Image(ctx, root)
	if err != nil {
		return err
	}
	// The record goes first: a crash between the two steps leaves pins
	// without a record, which `shoal gc` treats as garbage, never a record
	// whose blobs are gone.
	if err := n.meta.Delete(ctx, imageKey(root)); err != nil {
		return err
	}
	if err := n.meta.Sync(ctx, imagesPrefix); err != nil {
		return err
	}
	return n.unpinUnused(ctx, img.Blobs)
}

// pinBlobs pins blobs recursively. Push and pull have just stored and read
// every block of every blob, so the pins are recorded without walking the
// DAGs again; a blob whose root is not here is refused. The caller holds
// pinMu.
func (n *Node) pinBlobs(ctx context.Context, reason string, blobs []cid.Cid) error {
	if err := n.syncBlocks(); err != nil {
		return err
	}
	// The pinner syncs its state after every pin by default, four
	// fdatasyncs each: a push of three blobs spent 8 ms of its 60 ms of
	// fixed cost there. Flush below syncs them all at once; before it,
	// the pinner's dirty mark says its state may be incomplete.
	if p, ok := n.pins.(interface{ SetAutosync(bool) bool }); ok {
		defer p.SetAutosync(p.SetAutosync(false))
	}
	for _, c := range blobs {
		if _, pinned, err := n.pins.IsPinnedWithType(ctx, c, pinner.Recursive); err != nil {
			return err
		} else if pinned {
			continue
		}
		if has, err := n.bstore.Has(ctx, c); err != nil {
			return err
		} else if !has {
			return fmt.Errorf("blob %s is not stored here", c)
		}
		if err := n.pins.PinWithMode(ctx, c, pinner.Recursive, reason); err != nil {
			return fmt.Errorf("blob %s: %w", c, err)
		}
	}
	return n.pins.Flush(ctx)
}

// unpinUnused unpins those of blobs that no image record and no hold names
// any more. The caller holds pinMu and has already dropped its own record.
func (n *Node) unpinUnused(ctx context.Context, blobs []string) error {
	inUse, err := n.namedBlobs(ctx)
	if err != nil {
		return err
	}
	for _, b := range blobs {
		if inUse[b] {
			continue
		}
		c, err := cid.Decode(b)
		if err != nil {
			continue
		}
		if err := n.pins.Unpin(ctx, c, true); err != nil && !errors.Is(err, pinner.ErrNotPinned) {
			return fmt.Errorf("unpin %s: %w", c, err)
		}
	}
	return n.pins.Flush(ctx)
}

// namedBlobs is every blob that an image record or a hold names: what must
// stay pinned.
func (n *Node) namedBlobs(ctx context.Context) (map[string]bool, error) {
	named := map[string]bool{}
	imgs, err := n.Images(ctx)
	if err != nil {
		return nil, err
	}
	for _, img := range imgs {
		for _, b := range img.Blobs {
			named[b] = true
		}
	}
	err = n.eachHold(ctx, func(_ string, blobs []string) {
		for _, b := range blobs {
			named[b] = true
		}
	})
	return named, err
}

func decodeCIDs(ss []string) ([]cid.Cid, error) {
	out := make([]cid.Cid, 0, len(ss))
	for _, s := range ss {
		c, err := cid.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("CID %q: %w", s, err)
		}
		out = append(out, c)
	}
	return out, nil
}
