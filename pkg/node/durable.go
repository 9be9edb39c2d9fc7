package node

import (
	"context"
	"path/filepath"

	ds "github.com/ipfs/go-datastore"
	flatfs "github.com/ipfs/go-ds-flatfs"
	"github.com/shoal-ipfs/shoal/internal/durable"
)

// A pin or hold makes the blocks it names durable before it records them,
// so that after a crash or a power cut a pinned image's blocks are on the
// disk whatever the sync setting. The stores note the files they write
// (packs, flatfs's block files) and a pin syncs those since the last
// (durable.Files): fsyncing each as it is written ([datastore] sync) costs
// a flush per block instead. What a crash catches before the pin (a pack
// whose bytes never reached the disk though its index did) is found
// corrupt on reading, dropped and fetched again: it is never served.

// syncBlocks makes the blocks stored since the last call durable: the
// loose store's, then the packs'.
func (n *Node) syncBlocks() error {
	if err := n.syncLoose(); err != nil {
		return err
	}
	return n.packs.Sync()
}

// writtenFlatfs is a flatfs block store that notes the files it writes.
type writtenFlatfs struct {
	*flatfs.Datastore
	dir     string
	shard   flatfs.ShardFunc
	written *durable.Files
}

func newWrittenFlatfs(ff *flatfs.Datastore, dir string) (*writtenFlatfs, error) {
	shard, err := flatfs.ParseShardFunc(ff.ShardStr())
	if err != nil {
		return nil, err
	}
	return &writtenFlatfs{Datastore: ff, dir: dir, shard: shard.Func(), written: durable.NewFiles(dir)}, nil
}

// path is where flatfs keeps key: its documented layout, DIR/SHARD/KEY.data.
func (w *writtenFlatfs) path(key ds.Key) string {
	name := key.String()[1:]
	return filepath.Join(w.dir, w.shard(name), name+".data")
}

// Put notes the file once it is written: a sync that runs while it is
// being written does not take it for done.
func (w *writtenFlatfs) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := w.Datastore.Put(ctx, key, value); err != nil {
		return err
	}
	w.written.Wrote(w.path(key))
	return nil
}

func (w *writtenFlatfs) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := w.Datastore.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &writtenBatch{Batch: b, fs: w}, nil
}

// writtenBatch notes a batch's files once it is committed, when they are
// in place.
type writtenBatch struct {
	ds.Batch
	fs   *writtenFlatfs
	keys []ds.Key
}

func (b *writtenBatch) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := b.Batch.Put(ctx, key, value); err != nil {
		return err
	}
	b.keys = append(b.keys, key)
	return nil
}

func (b *writtenBatch) Commit(ctx context.Context) error {
	if err := b.Batch.Commit(ctx); err != nil {
		return err
	}
	for _, k := range b.keys {
		b.fs.written.Wrote(b.fs.path(k))
	}
	b.keys = nil
	return nil
}
