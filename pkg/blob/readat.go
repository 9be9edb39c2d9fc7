package blob

import (
	"context"
	"fmt"
	"io"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// ReadAt reads len(p) bytes of the UnixFS file at root from offset off,
// fetching only the blocks that hold them (and the nodes above those),
// the leaves of each level all at once. It returns io.EOF, as
// io.ReaderAt does, when the file ends before p is full.
//
// A DAG reader would do too, but it loads ten blocks past each one it
// reads: for random access from peers (a lazy mount reading a span of a
// layer) that is megabytes fetched for nothing.
func ReadAt(ctx context.Context, get ipld.NodeGetter, root cid.Cid, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", root, off)
	}
	n, err := get.Get(ctx, root)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", root, err)
	}
	size, err := fileSize(n)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", root, err)
	}
	if off >= int64(size) {
		return 0, io.EOF
	}
	want := min(int64(len(p)), int64(size)-off)
	if err := readNode(ctx, get, n, p[:want], uint64(off)); err != nil {
		return 0, fmt.Errorf("read %s at %d: %w", root, off, err)
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// fileSize is the size of the file a node of a UnixFS file DAG holds.
func fileSize(n ipld.Node) (uint64, error) {
	switch n := n.(type) {
	case *merkledag.RawNode:
		return uint64(len(n.RawData())), nil
	case *merkledag.ProtoNode:
		fsn, err := unixfs.FSNodeFromBytes(n.Data())
		if err != nil {
			return 0, err
		}
		return fsn.FileSize(), nil
	}
	return 0, fmt.Errorf("block %s: codec %#x is not part of a UnixFS file", n.Cid(), n.Cid().Prefix().Codec)
}

// readNode fills p with the bytes of n's file from off; p lies within it.
func readNode(ctx context.Context, get ipld.NodeGetter, n ipld.Node, p []byte, off uint64) error {
	if raw, ok := n.(*merkledag.RawNode); ok {
		data := raw.RawData()
		if off+uint64(len(p)) > uint64(len(data)) {
			return fmt.Errorf("block %s holds %d bytes, not [%d, +%d)", n.Cid(), len(data), off, len(p))
		}
		copy(p, data[off:])
		return nil
	}
	pn, ok := n.(*merkledag.ProtoNode)
	if !ok {
		return fmt.Errorf("block %s: codec %#x is not part of a UnixFS file", n.Cid(), n.Cid().Prefix().Codec)
	}
	fsn, err := unixfs.FSNodeFromBytes(pn.Data())
	if err != nil {
		return fmt.Errorf("block %s: %w", n.Cid(), err)
	}
	if fsn.NumChildren() != len(pn.Links()) {
		return fmt.Errorf("block %s: %d block sizes for %d links", n.Cid(), fsn.NumChildren(), len(pn.Links()))
	}
	// A node's own data comes first, then its children's, in order.
	own := fsn.Data()
	if off < uint64(len(own)) {
		k := copy(p, own[off:])
		p, off = p[k:], 0
	} else {
		off -= uint64(len(own))
	}
	type part struct {
		p   []byte
		off uint64
	}
	parts := map[cid.Cid][]part{}
	var order []cid.Cid
	start := uint64(0)
	for i, l := range pn.Links() {
		if len(p) == 0 {
			break
		}
		size := fsn.BlockSize(i)
		end := start + size
		if off < end {
			from := off - start
			k := min(uint64(len(p)), size-from)
			if _, seen := parts[l.Cid]; !seen {
				order = append(order, l.Cid)
			}
			parts[l.Cid] = append(parts[l.Cid], part{p[:k], from})
			p, off = p[k:], end
		}
		start = end
	}
	if len(p) > 0 {
		return fmt.Errorf("block %s: children hold less than its file size", n.Cid())
	}
	// An error below leaves the fetch of the other children: end it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := 0
	for opt := range get.GetMany(ctx, order) {
		if opt.Err != nil {
			return opt.Err
		}
		got++
		for _, pt := range parts[opt.Node.Cid()] {
			if err := readNode(ctx, get, opt.Node, pt.p, pt.off); err != nil {
				return err
			}
		}
	}
	if got != len(order) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%d of %d blocks arrived", got, len(order))
	}
	return nil
}
