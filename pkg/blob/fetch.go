package blob

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Fetch makes every block of the DAG at root available through get, one
// level of the tree at a time with the whole level requested at once, so
// that many blocks are in flight from all peers. Blocks already stored are
// not requested again, which is what lets an interrupted pull resume.
// onBlock, if not nil, is called with each block's raw size as it arrives.
func Fetch(ctx context.Context, get ipld.NodeGetter, root cid.Cid, onBlock func(size int)) error {
	level := []cid.Cid{root}
	for len(level) > 0 {
		level = dedup(level)
		var next []cid.Cid
		got := 0
		for opt := range get.GetMany(ctx, level) {
			if opt.Err != nil {
				return fmt.Errorf("fetch %s: %w", root, opt.Err)
			}
			got++
			if onBlock != nil {
				onBlock(len(opt.Node.RawData()))
			}
			links, err := Links(opt.Node)
			if err != nil {
				return fmt.Errorf("fetch %s: %w", root, err)
			}
			next = append(next, links...)
		}
		if got != len(level) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("fetch %s: %w", root, err)
			}
			return fmt.Errorf("fetch %s: %d of %d blocks arrived", root, got, len(level))
		}
		level = next
	}
	return nil
}

// dedup drops repeated CIDs: GetMany answers each distinct CID once, and a
// file whose chunks repeat (zeros, say) links the same leaf many times.
func dedup(cs []cid.Cid) []cid.Cid {
	seen := make(map[cid.Cid]struct{}, len(cs))
	out := cs[:0:0]
	for _, c := range cs {
		if _, ok := seen[c]; !ok {
			seen[c] = struct{}{}
			out = append(out, c)
		}
	}
	return out
}

// Leaves lists the leaves of the file DAG at root in file order (a leaf
// repeated in the file is listed each time), fetching the nodes above them
// through get one level at a time, each level at once. Raw blocks are
// leaves; so is a dag-pb node without links.
func Leaves(ctx context.Context, get ipld.NodeGetter, root cid.Cid) ([]cid.Cid, error) {
	sh, err := ShapeOf(ctx, get, root)
	if err != nil {
		return nil, err
	}
	out := make([]cid.Cid, len(sh.Leaves))
	for i, l := range sh.Leaves {
		out[i] = l.CID
	}
	return out, nil
}

// Shape is how a file DAG is built: the nodes above its leaves, and its
// leaves in file order with their sizes.
type Shape struct {
	Inner  []cid.Cid
	Leaves []Leaf
}

// Leaf is one leaf block of a file DAG.
type Leaf struct {
	CID cid.Cid
	// Size is the block's size as its parent's link gives it; 0 for a
	// file of one block, which has no parent.
	Size uint64
}

// ShapeOf reads the shape of the file DAG at root, fetching the nodes above
// its leaves through get one level at a time, each level at once; the
// leaves themselves are not fetched.
func ShapeOf(ctx context.Context, get ipld.NodeGetter, root cid.Cid) (Shape, error) {
	inner := map[cid.Cid]ipld.Node{}
	level := []cid.Cid{root}
	for len(level) > 0 {
		var want []cid.Cid
		for _, c := range dedup(level) {
			if c.Prefix().Codec != cid.Raw {
				if _, ok := inner[c]; !ok {
					want = append(want, c)
				}
			}
		}
		level = nil
		got := 0
		for opt := range get.GetMany(ctx, want) {
			if opt.Err != nil {
				return Shape{}, fmt.Errorf("leaves of %s: %w", root, opt.Err)
			}
			got++
			inner[opt.Node.Cid()] = opt.Node
			links, err := Links(opt.Node)
			if err != nil {
				return Shape{}, fmt.Errorf("leaves of %s: %w", root, err)
			}
			level = append(level, links...)
		}
		if got != len(want) {
			if err := ctx.Err(); err != nil {
				return Shape{}, fmt.Errorf("leaves of %s: %w", root, err)
			}
			return Shape{}, fmt.Errorf("leaves of %s: %d of %d blocks arrived", root, got, len(want))
		}
	}
	var sh Shape
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid, size uint64)
	walk = func(c cid.Cid, size uint64) {
		n, ok := inner[c]
		if !ok {
			sh.Leaves = append(sh.Leaves, Leaf{CID: c, Size: size})
			return
		}
		links := n.Links() // Links above has checked the codec
		if len(links) == 0 {
			sh.Leaves = append(sh.Leaves, Leaf{CID: c, Size: uint64(len(n.RawData()))})
			return
		}
		if !seen[c] {
			seen[c] = true
			sh.Inner = append(sh.Inner, c)
		}
		for _, l := range links {
			walk(l.Cid, l.Size)
		}
	}
	walk(root, 0)
	return sh, nil
}
