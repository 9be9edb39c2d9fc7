package retrieval

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	unixfspb "github.com/ipfs/boxo/ipld/unixfs/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/blob"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// findProvidersWait bounds the DHT lookup for a blob's holders; on a LAN
// it completes in milliseconds.
const findProvidersWait = 2 * time.Second

// catFrom opens c where it is: here, or at the peers.
func (rt *Retriever) catFrom(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	if has, err := rt.store.Has(ctx, c); err != nil || has {
		if has {
			rt.localReads.Add(1)
		}
		return rt.prefetchingReader(ctx, c)
	}
	rt.peerReads.Add(1)
	// The DHT is asked for more holders while the connected peers are
	// tried, and waited for only if none of them has the blob: waiting
	// first cost every blob a node lacked up to findProvidersWait, even
	// when a connected peer had it.
	lookup := rt.lookUpHolders(ctx, c)
	defer lookup.stop()
	tried := map[peer.ID]bool{}
	if r := rt.catFromPeers(ctx, c, rt.gatewayCandidates(), tried); r != nil {
		return r, nil
	}
	if slices.ContainsFunc(lookup.wait(), func(p peer.ID) bool { return !tried[p] }) {
		if r := rt.catFromPeers(ctx, c, rt.gatewayCandidates(), tried); r != nil {
			return r, nil
		}
	}
	return rt.prefetchingReader(ctx, c)
}

// catFromPeers reads c from the given peers' gateways: from many at once
// if there are several, else as one CAR stream from the first that serves
// it, skipping and noting the peers tried. nil if none could.
func (rt *Retriever) catFromPeers(ctx context.Context, c cid.Cid, peers []peer.ID, tried map[peer.ID]bool) io.ReadCloser {
	if len(peers) >= 2 {
		r, err := rt.swarmRead(ctx, c, peers)
		if err == nil {
			return r
		}
		if !errors.Is(err, errNotSwarmed) {
			rt.log.Debug("fetching from many peers failed; one stream next", "cid", c, "err", err)
		}
	}
	for _, p := range peers {
		if tried[p] {
			continue
		}
		tried[p] = true
		cs, err := rt.openCAR(ctx, p, c)
		rt.noteGatewayError(p, c, err)
		if err != nil {
			continue
		}
		if !cs.inOrder {
			cs.body.Close()
			return nil
		}
		return newGatewayFile(ctx, rt, c, cs)
	}
	return nil
}

// holderLookup is a DHT lookup of a blob's holders running in the
// background; the holders it finds are connected as they are found.
type holderLookup struct {
	cancel context.CancelFunc
	done   chan struct{}
	found  []peer.ID
}

// lookUpHolders starts looking c's holders up through the router, if
// there is one.
func (rt *Retriever) lookUpHolders(ctx context.Context, c cid.Cid) *holderLookup {
	l := &holderLookup{cancel: func() {}, done: make(chan struct{})}
	if rt.router == nil {
		close(l.done)
		return l
	}
	ctx, l.cancel = context.WithCancel(ctx)
	go func() {
		defer close(l.done)
		l.found = routing.Connect(ctx, rt.host, rt.router, c, 8, findProvidersWait)
	}()
	return l
}

// wait waits for the lookup to end and returns the holders it connected.
func (l *holderLookup) wait() []peer.ID {
	<-l.done
	return l.found
}

// stop ends the lookup and waits for it.
func (l *holderLookup) stop() {
	l.cancel()
	<-l.done
}

// prefetchingReader reads the file in order while a background walk asks
// for every block of the DAG at once, so a sequential read is not bound by
// one round trip per block.
func (rt *Retriever) prefetchingReader(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	session := merkledag.NewSession(ctx, rt.dag)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = blob.Fetch(ctx, session, c, nil) // the reader reports any failure
	}()
	r, err := blob.Open(ctx, session, c)
	if err != nil {
		cancel()
		<-done
		return nil, err
	}
	return &prefetching{Reader: r, stop: func() { cancel(); <-done }}, nil
}

type prefetching struct {
	blob.Reader
	stop func()
}

func (p *prefetching) Close() error {
	p.stop()
	return p.Reader.Close()
}

// gatewayFile reads a UnixFS file off a depth-first CAR stream: each block
// is checked against its CID and its parent's links, stored, and its data
// handed to the reader. Should the stream fail, reading goes on from the
// same offset through bitswap.
type gatewayFile struct {
	ctx  context.Context
	rt   *Retriever
	root cid.Cid
	cs   *carStream
	v    *dagVerifier
	sink *blockSink
	todo []cid.Cid    // depth-first stack of blocks still to read
	cur  blocks.Block // the block data is of
	data []byte       // unread bytes of the current block
	// ahead are blocks read off the stream before they are needed, with
	// their SHA-256s, hashed together; aheadErr is where the stream
	// stopped after them.
	ahead     []blocks.Block
	aheadSums [][sha256.Size]byte
	aheadErr  error
	off       int64 // bytes handed out so far
	rest      io.ReadCloser
	err       error
	// whole, if set, is fed every byte handed out (CatHashing): a leaf
	// off the stream as it is hashed for its CID, the rest as it goes.
	whole *sha256x.Stream
}

func newGatewayFile(ctx context.Context, rt *Retriever, root cid.Cid, cs *carStream) *gatewayFile {
	return &gatewayFile{
		ctx: ctx, rt: rt, root: root, cs: cs,
		v:    newDAGVerifier(root),
		sink: newBlockSink(ctx, rt),
		todo: []cid.Cid{root},
	}
}

func (f *gatewayFile) Read(p []byte) (int, error) {
	for len(f.data) == 0 {
		switch {
		case f.err != nil:
			return 0, f.err
		case f.rest != nil:
			n, err := f.rest.Read(p)
			if f.whole != nil {
				f.whole.Write(p[:n])
			}
			return n, err
		case len(f.todo) == 0:
			f.err = io.EOF
			if err := f.sink.finish(f.ctx, f.root, f.off); err != nil {
				f.err = err
			}
			return 0, f.err
		}
		if err := f.next(); err != nil {
			if errors.Is(err, errNotFile) || f.ctx.Err() != nil {
				f.err = err
				return 0, err
			}
			f.rt.noteGatewayError(f.cs.peer, f.root, err)
			if err := f.fallBack(); err != nil {
				f.err = err
				return 0, err
			}
		}
	}
	k := copy(p, f.data)
	f.data = f.data[k:]
	f.off += int64(k)
	return k, nil
}

var errNotFile = errors.New("not a UnixFS file")

// next takes the next block in depth-first order, from the stream or, for
// a block seen before (a repeated chunk), from the store.
func (f *gatewayFile) next() error {
	release(f.cur)
	f.cur = nil
	c := f.todo[len(f.todo)-1]
	f.todo = f.todo[:len(f.todo)-1]
	var b blocks.Block
	var nd ipld.Node
	var err error
	fed := false // whole has b's data
	if f.v.seen(c) {
		if err := f.sink.flush(); err != nil {
			return err
		}
		b, err = f.rt.store.Get(f.ctx, c)
		if err != nil {
			return err
		}
		if err := f.sink.repeat(b); err != nil {
			return err
		}
	} else {
		var sum *[sha256.Size]byte
		b, sum, err = f.streamBlock()
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if f.whole != nil && sum == nil {
			if sum, err = f.feedLeaf(b, c); err != nil {
				return err
			}
			fed = sum != nil
		}
		// A block that does not verify marks the peer bad even when it
		// also comes out of order.
		if nd, err = f.v.check(b, sum); err != nil {
			return err
		}
		if string(b.Cid().Hash()) != string(c.Hash()) {
			return fmt.Errorf("gateway sent %s where depth-first order has %s", b.Cid(), c)
		}
		if err := f.sink.add(b); err != nil {
			return err
		}
	}
	if nd == nil {
		if nd, err = blob.DecodeBlock(b); err != nil {
			return err
		}
	}
	data, err := fileData(nd)
	if err != nil {
		return err
	}
	if f.whole != nil && !fed {
		f.whole.Write(data)
	}
	links := nd.Links()
	for i := len(links) - 1; i >= 0; i-- {
		f.todo = append(f.todo, links[i].Cid)
	}
	f.cur, f.data = b, data
	return nil
}

// feedLeaf hashes b, if it is the raw leaf c the depth-first order
// expects next, for its CID and for whole at once, and returns its
// SHA-256; nil if b is anything else (the caller checks it as usual).
func (f *gatewayFile) feedLeaf(b blocks.Block, c cid.Cid) (*[sha256.Size]byte, error) {
	want, ok := sha256Digest(c)
	if !ok || c.Prefix().Codec != cid.Raw || b.Cid().Prefix().Codec != cid.Raw || string(b.Cid().Hash()) != string(c.Hash()) {
		return nil, nil
	}
	if !f.whole.ChunkIf(b.RawData(), want) {
		return nil, fmt.Errorf("%w: %s does not hash to its CID", ErrBadBlock, c)
	}
	return &want, nil
}

// streamAhead is how many blocks are read off a CAR stream and hashed at
// once: the lanes of one sha256x pass. With 256 KiB chunks that is 4 MiB
// read ahead.
const streamAhead = 16

// streamBlock returns the stream's next block and its SHA-256.
func (f *gatewayFile) streamBlock() (blocks.Block, *[sha256.Size]byte, error) {
	if len(f.ahead) == 0 {
		if f.aheadErr != nil {
			return nil, nil, f.aheadErr
		}
		f.readAhead()
		if len(f.ahead) == 0 {
			return nil, nil, f.aheadErr
		}
	}
	b := f.ahead[0]
	f.ahead = f.ahead[1:]
	if f.aheadSums == nil {
		return b, nil, nil
	}
	sum := &f.aheadSums[0]
	f.aheadSums = f.aheadSums[1:]
	return b, sum, nil
}

// readAhead reads up to streamAhead blocks, no more than the DAG still
// has (the block being read, then todo), stopping early at the end of the
// stream, and hashes them.
func (f *gatewayFile) readAhead() {
	want := min(streamAhead, 1+len(f.todo))
	batch := make([]blocks.Block, 0, want)
	for len(batch) < want {
		b, err := f.cs.next(&f.rt.buffers)
		if err != nil {
			f.aheadErr = err
			break
		}
		batch = append(batch, b)
	}
	f.ahead, f.aheadSums = batch, nil
	if f.whole != nil {
		return // hashed one by one, with whole (feedLeaf)
	}
	data := make([][]byte, len(batch))
	for i, b := range batch {
		data[i] = b.RawData()
	}
	f.aheadSums = make([][sha256.Size]byte, len(batch))
	sha256x.SumMany(data, f.aheadSums)
}

// fileData is the part of a UnixFS file a block holds itself.
func fileData(nd ipld.Node) ([]byte, error) {
	pn, ok := nd.(*merkledag.ProtoNode)
	if !ok {
		return nd.RawData(), nil
	}
	fsn, err := unixfs.FSNodeFromBytes(pn.Data())
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", nd.Cid(), errNotFile, err)
	}
	switch fsn.Type() {
	case unixfspb.Data_File, unixfspb.Data_Raw:
		return fsn.Data(), nil
	default:
		return nil, fmt.Errorf("%s: %w: it is a UnixFS %s", nd.Cid(), errNotFile, fsn.Type())
	}
}

// fallBack keeps what arrived and reads the rest through the blockservice.
func (f *gatewayFile) fallBack() error {
	_ = f.sink.close()
	f.cs.body.Close()
	r, err := f.rt.prefetchingReader(f.ctx, f.root)
	if err != nil {
		return err
	}
	if _, err := r.(io.Seeker).Seek(f.off, io.SeekStart); err != nil {
		r.Close()
		return err
	}
	f.rest = r
	return nil
}

func (f *gatewayFile) Close() error {
	err := f.sink.close()
	f.cs.body.Close()
	if f.rest != nil {
		err = errors.Join(err, f.rest.Close())
	}
	return err
}
