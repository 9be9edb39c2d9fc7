package node

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/shoal-ipfs/shoal/pkg/store"
)

// GC removes every block that no pinned image reaches, no hold names and
// no lease spares. It runs beside reads and writes: a read of a block it
// removes fails as a read of any missing block does, and a block written
// while it runs, or since the oldest lease was taken, is kept (see spare).
// Pins and holds wait while it runs. A damaged pinned blob (a block
// missing or corrupt) is reported, not fatal: its blocks are kept. It
// stops when ctx ends.
func (n *Node) GC(ctx context.Context) (store.GCResult, error) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	if err := n.dropOrphanPins(ctx); err != nil {
		return store.GCResult{}, err
	}
	n.spare.beginGC()
	defer n.spare.endGC()
	if n.fetch != nil {
		defer n.fetch.ForgetHaves()
	}

	var res store.GCResult
	// The blockstore is keyed by multihash: the keys it lists carry the raw
	// codec whatever codec the pin's links use, so liveness is by multihash.
	live := map[string]struct{}{}
	var damagedBlobs []cid.Cid
	for sp := range n.pins.RecursiveKeys(ctx, false) {
		if sp.Err != nil {
			return res, sp.Err
		}
		damage, err := n.mark(ctx, sp.Pin.Key, live)
		if err != nil {
			return res, fmt.Errorf("gc: walk pin %s: %w", sp.Pin.Key, err)
		}
		if len(damage) > 0 {
			damagedBlobs = append(damagedBlobs, sp.Pin.Key)
			res.Damaged = append(res.Damaged, damage...)
		}
	}
	if err := n.heldBlocks(ctx, func(c cid.Cid) { live[string(c.Hash())] = struct{}{} }); err != nil {
		return res, err
	}
	for _, root := range n.spare.keptRoots() {
		// A leased blob may be stored in part: what is there is kept.
		if _, err := n.mark(ctx, root, live); err != nil {
			return res, fmt.Errorf("gc: walk leased blob %s: %w", root, err)
		}
	}
	for _, blob := range damagedBlobs {
		// The leaves below a damaged node are unknown; a blob kept whole in
		// a pack has them all there.
		inPack, err := n.packs.EachLeafOf(ctx, blob, func(c cid.Cid) { live[string(c.Hash())] = struct{}{} })
		if err != nil {
			return res, err
		}
		if !inPack {
			res.Spared = true
		}
	}
	if res.Spared {
		n.log.Warn("gc: deleting nothing: a damaged pinned blob's blocks cannot be told from garbage; run `shoal verify --repair`", "damaged", len(res.Damaged))
		return res, nil
	}

	keys, err := n.bstore.AllKeysChan(ctx)
	if err != nil {
		return res, err
	}
	for k := range keys {
		if _, ok := live[string(k.Hash())]; ok {
			res.Kept++
			continue
		}
		size, err := n.bstore.GetSize(ctx, k)
		if err != nil {
			continue // gone since listed
		}
		deleted, err := n.spare.deleteUnlessWritten(k.Hash(), func() error { return n.bstore.DeleteBlock(ctx, k) })
		if err != nil {
			return res, fmt.Errorf("gc: delete %s: %w", k, err)
		}
		if !deleted {
			res.Kept++
			continue
		}
		res.Blocks++
		res.Bytes += int64(size)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if err := n.packs.Sweep(ctx); err != nil {
		return res, fmt.Errorf("gc: packs: %w", err)
	}
	return res, nil
}

// mark adds every block under root that is stored to live, reading only
// the nodes that have links (raw leaves need no read). Blocks that are
// missing, or corrupt and so dropped on reading, are returned as damage;
// the walk goes on past them.
func (n *Node) mark(ctx context.Context, root cid.Cid, live map[string]struct{}) ([]store.Damage, error) {
	var damage []store.Damage
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return damage, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := string(c.Hash())
		if _, seen := live[k]; seen {
			continue
		}
		if c.Prefix().Codec == cid.Raw {
			if has, err := n.bstore.Has(ctx, c); err != nil {
				return damage, err
			} else if !has {
				damage = append(damage, store.Damage{Blob: root.String(), Block: c.String(), Err: "missing"})
			}
			live[k] = struct{}{}
			continue
		}
		nd, err := n.offline.Get(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return damage, ctx.Err()
			}
			if !ipld.IsNotFound(err) {
				n.log.Warn("gc: reading a pinned block", "blob", root, "block", c, "err", err)
			}
			damage = append(damage, store.Damage{Blob: root.String(), Block: c.String(), Err: describeDamage(err)})
			live[k] = struct{}{}
			continue
		}
		live[k] = struct{}{}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
	}
	return damage, nil
}

func describeDamage(err error) string {
	if ipld.IsNotFound(err) {
		return "missing"
	}
	return err.Error()
}

// dropOrphanPins unpins blobs that no image record or hold names, which a
// crash in RemoveImage or Release can leave behind.
func (n *Node) dropOrphanPins(ctx context.Context) error {
	named, err := n.namedBlobs(ctx)
	if err != nil {
		return err
	}
	var orphans []cid.Cid
	for sp := range n.pins.RecursiveKeys(ctx, false) {
		if sp.Err != nil {
			return sp.Err
		}
		if !named[sp.Pin.Key.String()] {
			orphans = append(orphans, sp.Pin.Key)
		}
	}
	for _, c := range orphans {
		if err := n.pins.Unpin(ctx, c, true); err != nil {
			return fmt.Errorf("gc: unpin orphan %s: %w", c, err)
		}
	}
	return n.pins.Flush(ctx)
}
