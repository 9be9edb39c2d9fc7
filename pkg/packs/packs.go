// Package packs keeps the leaves of a whole blob in one file: a pack.
//
// A blob added or fetched in one go has its raw leaves written one after
// another into a pack file, so that the pack holds the blob's bytes, and
// an index in the node's datastore maps each leaf's multihash to its place
// in the pack. Storing a 95 MB layer is then one file written once instead
// of hundreds of block files, and a pull into an OCI layout can link the
// pack into the layout instead of writing the bytes a second time.
//
// Everything else (the DAG's inner nodes, blocks fetched one at a time by
// lazy reads or a group's shards) stays in the loose block store the Store
// wraps. The Store is a blockstore.Blockstore over both.
package packs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/multiformats/go-base32"
	mh "github.com/multiformats/go-multihash"
	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/internal/errkind"
)

var (
	leafPrefix = ds.NewKey("/shoal/packs/leaf")
	blobPrefix = ds.NewKey("/shoal/packs/blob")
)

const packExt = ".pack"

// Store is a blockstore whose raw leaves may live in packs.
type Store struct {
	loose blockstore.Blockstore
	meta  ds.Batching
	dir   string
	sync  bool

	mu      sync.Mutex
	writing map[string]bool // packs being written, which Sweep spares
	// touched, while a Sweep runs, names every pack written during it,
	// which it spares too: its leaves may be indexed after Sweep read the
	// index.
	touched map[string]bool

	ways writeWays // how fast each way of writing a pack has been
	// written are the packs written since the last Sync.
	written *durable.Files

	onWrite   func(mh.Multihash)
	onCorrupt func(c cid.Cid, err error)
}

// Option configures a Store.
type Option func(*Store)

// OnWrite has f told of every block before it is stored, whether or not
// the store holds it already: garbage collection spares what is being
// written (see the node's leases).
func OnWrite(f func(mh.Multihash)) Option { return func(s *Store) { s.onWrite = f } }

// OnCorrupt has f told of every block found corrupt on reading, after it
// was dropped.
func OnCorrupt(f func(c cid.Cid, err error)) Option { return func(s *Store) { s.onCorrupt = f } }

// New returns a Store keeping packs in dir and their index in meta, over
// the loose block store. With sync, a pack's bytes reach the disk before
// the index names them.
func New(loose blockstore.Blockstore, meta ds.Batching, dir string, sync bool, opts ...Option) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("packs: %w", err)
	}
	s := &Store{loose: loose, meta: meta, dir: dir, sync: sync, writing: map[string]bool{}, written: durable.NewFiles(dir)}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

func (s *Store) wrote(bs ...blocks.Block) {
	if s.onWrite == nil {
		return
	}
	for _, b := range bs {
		s.onWrite(b.Cid().Hash())
	}
}

var _ blockstore.Blockstore = (*Store)(nil)

// location is where a leaf, or a whole blob, lies in a pack.
type location struct {
	pack        string
	off, length int64
}

func (l location) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(len(l.pack)))
	b = append(b, l.pack...)
	b = binary.AppendUvarint(b, uint64(l.off))
	return binary.AppendUvarint(b, uint64(l.length))
}

func decodeLocation(b []byte) (location, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return location{}, errors.New("packs: bad index entry")
	}
	l := location{pack: string(b[k : k+int(n)])}
	b = b[k+int(n):]
	off, k := binary.Uvarint(b)
	if k <= 0 {
		return location{}, errors.New("packs: bad index entry")
	}
	length, k2 := binary.Uvarint(b[k:])
	if k2 <= 0 || off > 1<<62 || length > 1<<62 {
		return location{}, errors.New("packs: bad index entry")
	}
	l.off, l.length = int64(off), int64(length)
	return l, nil
}

// The blockstore is keyed by multihash, as boxo's is: a leaf asked for
// under another codec is the same block.
func leafKey(h mh.Multihash) ds.Key {
	return leafPrefix.ChildString(base32.RawStdEncoding.EncodeToString(h))
}

// leafCID is the CID a leaf's index key names; like boxo's blockstore, the
// store lists raw CIDs.
func leafCID(k ds.Key) (cid.Cid, error) {
	h, err := base32.RawStdEncoding.DecodeString(k.Name())
	if err != nil {
		return cid.Undef, fmt.Errorf("packs: index key %s: %w", k, err)
	}
	return cid.NewCidV1(cid.Raw, h), nil
}

func blobKey(c cid.Cid) ds.Key {
	return blobPrefix.ChildString(base32.RawStdEncoding.EncodeToString(c.Hash()))
}

func (s *Store) locate(ctx context.Context, c cid.Cid) (location, bool, error) {
	v, err := s.meta.Get(ctx, leafKey(c.Hash()))
	if errors.Is(err, ds.ErrNotFound) {
		return location{}, false, nil
	}
	if err != nil {
		return location{}, false, err
	}
	l, err := decodeLocation(v)
	return l, err == nil, err
}

func (s *Store) path(pack string) string { return filepath.Join(s.dir, pack+packExt) }

func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if _, ok, err := s.locate(ctx, c); err != nil || ok {
		return ok, err
	}
	return s.loose.Has(ctx, c)
}

func (s *Store) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	l, ok, err := s.locate(ctx, c)
	if err != nil {
		return -1, err
	}
	if ok {
		return int(l.length), nil
	}
	return s.loose.GetSize(ctx, c)
}

// ErrCorrupt is a stored block whose bytes do not hash to its CID: a
// disk, a crash or a hand changed it after it was checked on the way in.
var ErrCorrupt = errkind.New("stored block does not match its CID", errdefs.ErrDataLoss)

// Get reads a block and checks it against its CID, so that no bytes the
// disk changed are ever handed out. A corrupt block is dropped, so that
// it reads as missing and is fetched again from peers.
func (s *Store) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := s.get(ctx, c)
	if !errors.Is(err, ErrCorrupt) {
		return b, err
	}
	if derr := s.DeleteBlock(ctx, c); derr != nil {
		return nil, errors.Join(err, derr)
	}
	if s.onCorrupt != nil {
		s.onCorrupt(c, err)
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

// Check reads block c and reports ErrCorrupt if its bytes do not match
// its CID, leaving it in place.
func (s *Store) Check(ctx context.Context, c cid.Cid) error {
	_, err := s.get(ctx, c)
	return err
}

func (s *Store) get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := s.read(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := checkBlock(c, b.RawData()); err != nil {
		return nil, err
	}
	return b, nil
}

// Unchecked is the store as a blockstore whose Get does not hash what it
// reads: for a server whose clients check every block themselves (a
// trustless gateway), so that its CPU goes to moving bytes.
func (s *Store) Unchecked() blockstore.Blockstore { return unchecked{s} }

type unchecked struct{ *Store }

func (u unchecked) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	return u.read(ctx, c)
}

// read reads block c from a pack or the loose store, unchecked.
func (s *Store) read(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	l, ok, err := s.locate(ctx, c)
	if err != nil {
		return nil, err
	}
	var b blocks.Block
	if ok {
		b, err = s.readLeaf(c, l)
		if errors.Is(err, fs.ErrNotExist) {
			// Swept since located: the leaf moved to the loose store or went.
			b, err = s.loose.Get(ctx, c)
		}
	} else {
		b, err = s.loose.Get(ctx, c)
	}
	return b, err
}

// checkBlock hashes data as c says it was hashed.
func checkBlock(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("packs: check %s: %w", c, err)
	}
	if !bytes.Equal(got.Hash(), c.Hash()) {
		return fmt.Errorf("%w: %s", ErrCorrupt, c)
	}
	return nil
}

// readLeaf reads leaf c from where the index puts it.
func (s *Store) readLeaf(c cid.Cid, l location) (blocks.Block, error) {
	f, err := os.Open(s.path(l.pack))
	if err != nil {
		return nil, fmt.Errorf("packs: leaf %s: %w", c, err)
	}
	defer f.Close()
	data := make([]byte, l.length)
	if _, err := f.ReadAt(data, l.off); errors.Is(err, io.EOF) {
		// The index names bytes the pack never got: a crash cut it short.
		return nil, fmt.Errorf("%w: %s: pack %s ends before it", ErrCorrupt, c, l.pack)
	} else if err != nil {
		return nil, fmt.Errorf("packs: leaf %s in %s: %w", c, l.pack, err)
	}
	return blocks.NewBlockWithCid(data, c)
}

// Leaves opens leaves one after another and keeps the last one's pack
// open for the next: a server sending a blob's leaves in order opens the
// pack once, not once a leaf. It is not safe for concurrent use.
type Leaves struct {
	s    *Store
	pack string
	f    *os.File
}

// Leaves starts reading leaves; Close ends it.
func (s *Store) Leaves() *Leaves { return &Leaves{s: s} }

// Open returns leaf c's bytes in its pack, readable until the next Open
// or Close (a pack swept meanwhile still reads: it is only unlinked); ok
// is false if no pack holds c (it may still be a loose block). The bytes
// are not checked against c, as Get does not check them, and a pack a
// crash cut short ends early: read exactly the section's size or fail.
func (r *Leaves) Open(ctx context.Context, c cid.Cid) (leaf *io.SectionReader, ok bool, err error) {
	l, ok, err := r.s.locate(ctx, c)
	if err != nil || !ok {
		return nil, false, err
	}
	if r.f == nil || r.pack != l.pack {
		if err := r.Close(); err != nil {
			return nil, false, err
		}
		f, err := os.Open(r.s.path(l.pack))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil // swept since located: the leaf moved out or is gone
		}
		if err != nil {
			return nil, false, fmt.Errorf("packs: leaf %s: %w", c, err)
		}
		r.f, r.pack = f, l.pack
	}
	return io.NewSectionReader(r.f, l.off, l.length), true, nil
}

// Close closes the pack the last Open read from.
func (r *Leaves) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f, r.pack = nil, ""
	return err
}

func (s *Store) Put(ctx context.Context, b blocks.Block) error {
	s.wrote(b)
	return s.loose.Put(ctx, b)
}

func (s *Store) PutMany(ctx context.Context, bs []blocks.Block) error {
	s.wrote(bs...)
	return s.loose.PutMany(ctx, bs)
}

// DeleteBlock forgets the block wherever it is. A pack's file goes at the
// next Sweep, once none of its leaves is left.
func (s *Store) DeleteBlock(ctx context.Context, c cid.Cid) error {
	_, packed, err := s.locate(ctx, c)
	if err != nil {
		return err
	}
	if packed {
		if err := s.meta.Delete(ctx, leafKey(c.Hash())); err != nil {
			return err
		}
	}
	err = s.loose.DeleteBlock(ctx, c)
	if packed && ipld.IsNotFound(err) {
		return nil
	}
	return err
}

// AllKeysChan lists the packed leaves, then the loose blocks. A block
// stored both ways is listed twice.
func (s *Store) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	res, err := s.meta.Query(ctx, dsq.Query{Prefix: leafPrefix.String(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	loose, err := s.loose.AllKeysChan(ctx)
	if err != nil {
		res.Close()
		return nil, err
	}
	out := make(chan cid.Cid, 64)
	go func() {
		defer close(out)
		defer res.Close()
		for r := range res.Next() {
			if r.Error != nil {
				return
			}
			c, err := leafCID(ds.RawKey(r.Key))
			if err != nil {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
		for c := range loose {
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// BlobFile returns the pack holding the whole blob root, byte for byte,
// and the blob's size; ok is false if no pack does.
func (s *Store) BlobFile(ctx context.Context, root cid.Cid) (path string, size int64, ok bool, err error) {
	v, err := s.meta.Get(ctx, blobKey(root))
	if errors.Is(err, ds.ErrNotFound) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	l, err := decodeLocation(v)
	if err != nil {
		return "", 0, false, err
	}
	p := s.path(l.pack)
	if fi, err := os.Stat(p); err != nil || fi.Size() < l.off+l.length {
		return "", 0, false, nil
	}
	return p, l.length, true, nil
}

// EachLeafOf calls f with every leaf indexed in the pack that holds the
// whole blob root; ok is false if no pack does.
func (s *Store) EachLeafOf(ctx context.Context, root cid.Cid, f func(cid.Cid)) (ok bool, err error) {
	v, err := s.meta.Get(ctx, blobKey(root))
	if errors.Is(err, ds.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	blob, err := decodeLocation(v)
	if err != nil {
		return false, err
	}
	res, err := s.meta.Query(ctx, dsq.Query{Prefix: leafPrefix.String()})
	if err != nil {
		return false, err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return false, r.Error
		}
		if l, err := decodeLocation(r.Value); err == nil && l.pack == blob.pack {
			if c, err := leafCID(ds.RawKey(r.Key)); err == nil {
				f(c)
			}
		}
	}
	return true, nil
}

// Sweep removes the packs no leaf refers to any more, with their blob
// records, and frees the space of packs mostly collected: a pack whose
// remaining leaves fill less than half of it has them moved to the loose
// store, and goes. (A pack is never cut into in place: an OCI layout may
// hold a link to it.) Run it after deleting blocks (garbage collection).
func (s *Store) Sweep(ctx context.Context) error {
	s.mu.Lock()
	s.touched = maps.Clone(s.writing)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.touched = nil
		s.mu.Unlock()
	}()
	type leaf struct {
		key ds.Key
		loc location
	}
	byPack := map[string][]leaf{}
	res, err := s.meta.Query(ctx, dsq.Query{Prefix: leafPrefix.String()})
	if err != nil {
		return err
	}
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		if l, err := decodeLocation(r.Value); err == nil {
			byPack[l.pack] = append(byPack[l.pack], leaf{ds.RawKey(r.Key), l})
		}
	}
	res.Close()

	for name, leaves := range byPack {
		var live int64
		for _, l := range leaves {
			live += l.loc.length
		}
		fi, err := os.Stat(s.path(name))
		if err != nil || s.isTouched(name) || 2*live >= fi.Size() {
			continue
		}
		for _, l := range leaves {
			if err := s.unpack(ctx, l.key, l.loc); err != nil {
				return err
			}
		}
		delete(byPack, name)
	}

	blobs, err := s.meta.Query(ctx, dsq.Query{Prefix: blobPrefix.String()})
	if err != nil {
		return err
	}
	var stale []ds.Key
	for r := range blobs.Next() {
		if r.Error != nil {
			blobs.Close()
			return r.Error
		}
		if l, err := decodeLocation(r.Value); err != nil || byPack[l.pack] == nil {
			stale = append(stale, ds.RawKey(r.Key))
		}
	}
	blobs.Close()
	for _, k := range stale {
		if err := s.meta.Delete(ctx, k); err != nil {
			return err
		}
	}

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		name, isPack := strings.CutSuffix(e.Name(), packExt)
		if !isPack || byPack[name] != nil || s.touched[name] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (s *Store) isTouched(pack string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.touched[pack]
}

// unpack moves the leaf under key from its pack to the loose store.
func (s *Store) unpack(ctx context.Context, key ds.Key, l location) error {
	c, err := leafCID(key)
	if err != nil {
		return err
	}
	b, err := s.readLeaf(c, l)
	if err != nil {
		return err
	}
	if err := checkBlock(c, b.RawData()); errors.Is(err, ErrCorrupt) {
		// Not worth keeping: dropped, to be fetched again if wanted.
		if s.onCorrupt != nil {
			s.onCorrupt(c, err)
		}
		return s.meta.Delete(ctx, key)
	} else if err != nil {
		return err
	}
	if err := s.loose.Put(ctx, b); err != nil {
		return err
	}
	return s.meta.Delete(ctx, key)
}

// Writer appends one blob's leaves to a new pack. It is not safe for
// concurrent use.
type Writer struct {
	s    *Store
	name string
	f    *os.File
	off  int64
	seen map[string]bool // multihashes indexed in this pack
	// direct, if set, is the pack opened again with O_DIRECT (see
	// DirectWhenFaster); stageBuf[:staged] holds copies of leaves
	// on their way there.
	direct   *os.File
	stageBuf []byte
	staged   int
	flush    flusher
}

// WriterOption sets how a Writer writes.
type WriterOption func(*writerOptions)

type writerOptions struct{ directWhenFaster bool }

// DirectWhenFaster has the writer time its writes and send each batch of
// leaves the way that has been faster per byte: copied into the page
// cache, or straight to the disk with O_DIRECT. Filling fresh page cache
// is usually several times faster than the disk, but on a VM whose host
// has taken back the guest's idle memory each new page costs a fault in
// the host, and the copy runs at a quarter of the disk's speed.
//
// Leaves go directly where their place in the pack is aligned to the page
// (a fixed-size layout's leaves are, all but a blob's last); those not
// aligned in memory are copied to a buffer that is. It suits a writer that
// does not read the pack back soon: a push, whose source is cached
// already, and a pull, which links the pack into its layout. Where the
// file system refuses O_DIRECT, every write goes through the cache.
func DirectWhenFaster() WriterOption {
	return func(o *writerOptions) { o.directWhenFaster = true }
}

// NewWriter starts a pack.
func (s *Store) NewWriter(opts ...WriterOption) (*Writer, error) {
	var o writerOptions
	for _, opt := range opts {
		opt(&o)
	}
	name, f, err := s.create()
	if err != nil {
		return nil, err
	}
	w := &Writer{s: s, name: name, f: f, seen: map[string]bool{}, flush: flusher{f: f, name: name, files: s.written}}
	if o.directWhenFaster {
		w.direct = openDirect(f.Name())
	}
	return w, nil
}

// create makes a new pack file, spared by Sweep until closePack.
func (s *Store) create() (string, *os.File, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", nil, err
	}
	name := hex.EncodeToString(id[:])
	// Read-only once closed: a pack linked into an OCI layout must not be
	// changed through the layout. The writer's handle also reads: a
	// swarm fetch's reader reads leaves back as they are placed.
	f, err := os.OpenFile(s.path(name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", nil, fmt.Errorf("packs: %w", err)
	}
	s.mu.Lock()
	s.writing[name] = true
	if s.touched != nil {
		s.touched[name] = true
	}
	s.mu.Unlock()
	return name, f, nil
}

// closePack closes a pack file, removing it if nothing was written to it.
func (s *Store) closePack(name string, f *os.File, empty bool) error {
	err := f.Close()
	if empty {
		err = errors.Join(err, os.Remove(f.Name()))
	}
	s.mu.Lock()
	delete(s.writing, name)
	s.mu.Unlock()
	return err
}

// Add stores blocks in order: raw leaves at the end of the pack (a leaf
// the pack already holds is written again but indexed once, so that the
// pack stays the blob's bytes), the rest in the loose store. When Add
// returns, every block is readable from the Store.
func (w *Writer) Add(ctx context.Context, bs []blocks.Block) error {
	w.s.wrote(bs...)
	var loose []blocks.Block
	var leaves [][]byte
	batch, err := w.s.meta.Batch(ctx)
	if err != nil {
		return err
	}
	indexed, off := 0, w.off
	for _, b := range bs {
		// An empty leaf has no place in a pack (an empty pack is removed).
		if b.Cid().Prefix().Codec != cid.Raw || len(b.RawData()) == 0 {
			loose = append(loose, b)
			continue
		}
		data := b.RawData()
		leaves = append(leaves, data)
		h := string(b.Cid().Hash())
		if !w.seen[h] {
			w.seen[h] = true
			l := location{pack: w.name, off: off, length: int64(len(data))}
			if err := batch.Put(ctx, leafKey(b.Cid().Hash()), l.encode()); err != nil {
				return err
			}
			indexed++
		}
		off += int64(len(data))
	}
	before := w.off
	if err := w.writeLeaves(leaves); err != nil {
		return fmt.Errorf("packs: write %s: %w", w.name, err)
	}
	if err := w.flush.wrote(w.off - before); err != nil {
		return err
	}
	if len(leaves) > 0 {
		w.s.written.Wrote(w.f.Name())
	}
	if len(loose) > 0 {
		if err := w.s.loose.PutMany(ctx, loose); err != nil { // told of above
			return err
		}
	}
	if indexed == 0 {
		return nil
	}
	if w.s.sync {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("packs: sync %s: %w", w.name, err)
		}
	}
	return batch.Commit(ctx)
}

// Sync makes the packs written since the last Sync durable, and their
// names in the directory: a pin calls it before it records what it pins.
func (s *Store) Sync() error { return s.written.Sync() }

// Size is how many bytes of leaves the pack holds.
func (w *Writer) Size() int64 { return w.off }

// Finish records that the pack holds the whole blob root, byte for byte:
// the caller added every leaf of the file, repeats included, in order,
// and the file's data is all in its leaves.
func (w *Writer) Finish(ctx context.Context, root cid.Cid) error {
	if err := w.flush.wrote(0); err != nil {
		return err
	}
	l := location{pack: w.name, length: w.off}
	return w.s.meta.Put(ctx, blobKey(root), l.encode())
}

// Close ends the writer; what it added stays. An empty pack is removed.
func (w *Writer) Close() error {
	err := w.flush.wait()
	if w.direct != nil {
		err = errors.Join(err, w.direct.Close())
	}
	return errors.Join(err, w.s.closePack(w.name, w.f, w.off == 0))
}

// Place is where a leaf lies in its blob.
type Place struct {
	Hash   mh.Multihash
	Offset int64
	Length int64
}

// PlacedWriter writes a blob's leaves into a new pack as they arrive, in
// any order, each at its place in the blob: a swarm fetch gets leaves from
// many peers at once. It is safe for concurrent use.
type PlacedWriter struct {
	s    *Store
	name string
	f    *os.File
	size int64

	mu      sync.Mutex
	places  map[string][]Place // multihash → where it goes, repeats included
	done    map[string]bool    // multihashes written
	missing int                // places not written yet
	written int                // leaves written
	flush   flusher
}

// NewPlacedWriter starts a pack for a blob of the given leaves.
func (s *Store) NewPlacedWriter(places []Place) (*PlacedWriter, error) {
	name, f, err := s.create()
	if err != nil {
		return nil, err
	}
	w := &PlacedWriter{s: s, name: name, f: f, places: map[string][]Place{}, done: map[string]bool{}, missing: len(places),
		flush: flusher{f: f, name: name, files: s.written}}
	for _, p := range places {
		w.places[string(p.Hash)] = append(w.places[string(p.Hash)], p)
		w.size = max(w.size, p.Offset+p.Length)
	}
	return w, nil
}

// Put writes b at each of its places and indexes it; it reports false for
// a block that is not one of the blob's leaves, or not of its length,
// which the caller stores elsewhere.
func (w *PlacedWriter) Put(ctx context.Context, b blocks.Block) (bool, error) {
	w.s.wrote(b)
	data := b.RawData()
	w.mu.Lock()
	places := w.places[string(b.Cid().Hash())]
	delete(w.places, string(b.Cid().Hash()))
	w.mu.Unlock()
	if len(places) == 0 || b.Cid().Prefix().Codec != cid.Raw || len(data) == 0 || places[0].Length != int64(len(data)) {
		return false, nil
	}
	for _, p := range places {
		if _, err := w.f.WriteAt(data, p.Offset); err != nil {
			return false, fmt.Errorf("packs: write %s: %w", w.name, err)
		}
	}
	w.s.written.Wrote(w.f.Name())
	if w.s.sync {
		if err := w.f.Sync(); err != nil {
			return false, fmt.Errorf("packs: sync %s: %w", w.name, err)
		}
	}
	l := location{pack: w.name, off: places[0].Offset, length: places[0].Length}
	if err := w.s.meta.Put(ctx, leafKey(b.Cid().Hash()), l.encode()); err != nil {
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.missing -= len(places)
	w.written++
	w.done[string(b.Cid().Hash())] = true
	return true, w.flush.wrote(int64(len(places) * len(data)))
}

// Holds reports whether the leaf c was written into the pack.
func (w *PlacedWriter) Holds(c cid.Cid) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done[string(c.Hash())]
}

// ReadAt reads the blob's bytes at off, from leaves already written.
func (w *PlacedWriter) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(p, off) }

// Finish records that the pack holds the whole blob root, if every leaf
// arrived through Put.
func (w *PlacedWriter) Finish(ctx context.Context, root cid.Cid) error {
	w.mu.Lock()
	complete, err := w.missing == 0, w.flush.wrote(0)
	w.mu.Unlock()
	if err != nil || !complete {
		return err
	}
	l := location{pack: w.name, length: w.size}
	return w.s.meta.Put(ctx, blobKey(root), l.encode())
}

// Close ends the writer; the leaves it wrote stay.
func (w *PlacedWriter) Close() error {
	w.mu.Lock()
	empty := w.written == 0
	err := w.flush.wait()
	w.mu.Unlock()
	return errors.Join(err, w.s.closePack(w.name, w.f, empty))
}
