package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// DefaultStallTimeout is how long a source may send nothing before the
// download goes on from the byte reached with the next source, unless
// Options.StallTimeout says otherwise.
const DefaultStallTimeout = 2 * time.Second

// source is somewhere a download reads a blob from: a peer or the upstream.
type source struct {
	name string // for logs and metrics: "upstream" or "peer"
	from string // the peer ID or the registry
	// path is the peers the bytes pass through on their way here, nearest
	// first: empty for the upstream. A node on it must not read from
	// this download, or the bytes would go round in a circle.
	path []peer.ID
	open func(ctx context.Context, offset int64) (io.ReadCloser, int64, error)
}

// download brings one blob into the store: its bytes are hashed and go to a
// spool file as they arrive, readers (HTTP clients, peers) follow the file,
// and an adder follows it too, storing the blob as UnixFS. Until the hash
// matches the digest no reader gets the last byte; the blob is recorded
// once the store has it too.
type download struct {
	m         *Mirror
	digest    digest.Digest
	ref       Ref
	mediaType string
	private   bool
	path      string
	file      *os.File
	whole     hash.Hash // of the bytes fetched, in order

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every change
	size    int64         // -1 until a source says
	written int64
	err     error // the download failed
	// verified is set once the bytes match the digest: readers get
	// their last bytes from then on, whatever becomes of the record.
	verified bool
	cid      cid.Cid   // defined once verified and stored: the spool may go
	refs     int       // the writer and open readers; the file goes at 0
	readers  chain     // peers reading it from here
	via      []peer.ID // the current source's path
	// senders are the peers that sent bytes: if the blob does not match
	// its digest, they are not asked again for a while.
	senders []string
}

// startDownload begins fetching d from sources, unless it is on its way
// already; the caller gets the download either way.
func (m *Mirror) startDownload(r Ref, d digest.Digest, mediaType string, private bool, sources []source) (*download, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if dl, ok := m.downloads[d]; ok {
		return dl, nil
	}
	path := filepath.Join(m.opts.Spool, d.Encoded())
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mirror: spool %s: %w", d, err)
	}
	dl := &download{
		m: m, digest: d, ref: r, mediaType: mediaType, private: private,
		path: path, file: f, whole: sha256.New(), changed: make(chan struct{}), size: -1, refs: 1,
		readers: chain{},
	}
	if len(sources) > 0 {
		dl.via = sources[0].path
	}
	m.downloads[d] = dl
	m.wg.Go(func() { dl.run(m.ctx, sources) })
	if m.opts.Peers != nil {
		m.opts.Peers.announce(d)
	}
	return dl, nil
}

// forget drops dl from the downloads running.
func (m *Mirror) forget(dl *download) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.downloads[dl.digest] == dl {
		delete(m.downloads, dl.digest)
	}
}

// joinDownload returns d's download if one is running here.
func (m *Mirror) joinDownload(d digest.Digest) *download {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.downloads[d]
}

func (dl *download) run(ctx context.Context, sources []source) {
	releaseSpool := sync.OnceFunc(dl.release)
	defer releaseSpool()
	start := time.Now()
	// What the download stores is spared by garbage collection until
	// its record holds it.
	lease, err := image.TakeLease(ctx, dl.m.store)
	if err != nil {
		dl.m.forget(dl)
		dl.fail(fmt.Errorf("blob %s: %w", dl.digest, err))
		return
	}
	defer lease.Release(context.WithoutCancel(ctx))
	added := make(chan addResult, 1)
	go func() { added <- dl.add(ctx) }()
	err = dl.fetch(ctx, sources)
	if err == nil {
		err = dl.verify()
	}
	if err != nil {
		// Forgotten first: a request that learns of the failure and
		// asks again starts a new download rather than joining this one.
		dl.m.forget(dl)
		dl.fail(err)
	}
	res := <-added
	if err == nil {
		err = res.err
	}
	if err == nil {
		// The blob is in the store, where readers that come from now on
		// read it: the spool goes once its readers are done. The record's
		// sync takes only the store's files, so the spool's pages, removed
		// before they reach the disk, are never written.
		dl.mu.Lock()
		dl.cid = res.cid
		dl.mu.Unlock()
		releaseSpool()
		err = dl.m.record(context.WithoutCancel(ctx), dl.digest, record{CID: res.cid.String(), Size: dl.size, MediaType: dl.mediaType, Private: dl.private})
	}
	dl.m.forget(dl)
	if err != nil {
		dl.m.log.Warn("mirror: download failed", "digest", dl.digest, "registry", dl.ref.Registry, "repo", dl.ref.Repo, "err", err)
		dl.m.metrics.downloads.WithLabelValues("failed").Observe(time.Since(start).Seconds())
		dl.fail(err)
		return
	}
	dl.m.metrics.downloads.WithLabelValues("ok").Observe(time.Since(start).Seconds())
}

// verify checks the bytes fetched against the digest and, if they match,
// lets readers have their last bytes: as soon as the last byte arrived,
// rather than once the store has it, so that a chain of peers does not
// wait at every node for its disk.
func (dl *download) verify() error {
	got := digest.NewDigestFromBytes(digest.SHA256, dl.whole.Sum(nil))
	if got != dl.digest {
		if p := dl.m.opts.Peers; p != nil {
			p.distrust(dl.senders...)
		}
		return fmt.Errorf("blob %s: the bytes received hash to %s: %w", dl.digest, got, errdefs.ErrDataLoss)
	}
	dl.mu.Lock()
	dl.verified = true
	dl.notify()
	dl.mu.Unlock()
	return nil
}

// fetch copies the blob into the spool, going on with the next source
// from the byte reached whenever one fails or stalls.
func (dl *download) fetch(ctx context.Context, sources []source) error {
	buf := make([]byte, 256<<10)
	var errs []error
	for _, src := range sources {
		err := dl.fetchFrom(ctx, src, buf)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s %s: %w", src.name, src.from, err))
		dl.m.log.Info("mirror: source failed, trying the next", "digest", dl.digest, "source", src.name, "from", src.from, "at", dl.written, "err", err)
		if errors.Is(err, errdefs.ErrDataLoss) {
			break
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("blob %s: nowhere to fetch it from: %w", dl.digest, errdefs.ErrNotFound)
	}
	return errors.Join(errs...)
}

func (dl *download) fetchFrom(ctx context.Context, src source, buf []byte) error {
	stall := dl.m.opts.StallTimeout
	ctx, kick, stop := image.IdleTimeout(ctx, stall)
	defer stop()
	dl.mu.Lock()
	off := dl.written
	dl.via = src.path
	dl.mu.Unlock()
	start := time.Now()
	rc, size, err := src.open(ctx, off)
	if err != nil {
		return err
	}
	defer rc.Close()
	dl.m.metrics.firstByte.WithLabelValues(src.name).Observe(time.Since(start).Seconds())
	dl.mu.Lock()
	switch {
	case size < 0:
		dl.mu.Unlock()
		return errors.New("the source does not say the blob's size")
	case dl.size < 0:
		dl.size = size
		dl.notify()
	case dl.size != size:
		dl.mu.Unlock()
		return fmt.Errorf("the source says %d bytes, an earlier one %d: %w", size, dl.size, errdefs.ErrDataLoss)
	}
	dl.mu.Unlock()
	received := dl.m.metrics.received.WithLabelValues(dl.ref.Registry, src.name)
	if src.name == "peer" {
		dl.mu.Lock()
		dl.senders = append(dl.senders, src.from)
		dl.mu.Unlock()
	}
	for off < size {
		n, err := rc.Read(buf[:min(int64(len(buf)), size-off)])
		if n > 0 {
			kick()
			if _, werr := dl.file.WriteAt(buf[:n], off); werr != nil {
				return fmt.Errorf("spool: %w", werr)
			}
			dl.whole.Write(buf[:n])
			off += int64(n)
			received.Add(float64(n))
			dl.mu.Lock()
			dl.written = off
			dl.notify()
			dl.mu.Unlock()
		}
		if err != nil {
			if off == size {
				break
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if cause := context.Cause(ctx); errors.Is(cause, image.ErrTimeout) {
				err = fmt.Errorf("sent nothing for %s", stall)
			}
			return err
		}
	}
	return nil
}

type addResult struct {
	cid cid.Cid
	err error
}

// add stores the blob as it arrives.
func (dl *download) add(ctx context.Context) addResult {
	rd, err := dl.follow(ctx, 0, false)
	if err != nil {
		return addResult{err: err}
	}
	defer rd.Close()
	c, err := dl.m.store.Add(ctx, rd)
	if err != nil {
		return addResult{err: fmt.Errorf("store blob %s: %w", dl.digest, err)}
	}
	return addResult{cid: c}
}

// notify wakes whoever waits for a change; dl.mu is held.
func (dl *download) notify() {
	close(dl.changed)
	dl.changed = make(chan struct{})
}

func (dl *download) fail(err error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err == nil {
		dl.err = err
		dl.notify()
	}
}

// release drops one reference to the spool file.
func (dl *download) release() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.refs--
	if dl.refs == 0 {
		dl.file.Close()
		os.Remove(dl.path)
	}
}

// waitSize waits until the blob's size is known.
func (dl *download) waitSize(ctx context.Context) (int64, error) {
	for {
		dl.mu.Lock()
		size, err, ch := dl.size, dl.err, dl.changed
		dl.mu.Unlock()
		if size >= 0 {
			return size, nil
		}
		if err != nil {
			return 0, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// follow reads the spool from offset as it fills. With verified, the last
// byte waits for the digest to match: no reader mistakes a wrong blob for
// the blob.
func (dl *download) follow(ctx context.Context, offset int64, verified bool) (io.ReadCloser, error) {
	dl.mu.Lock()
	if dl.refs == 0 {
		// Over and its spool gone: the blob is in the store, or failed.
		c, err := dl.cid, dl.err
		dl.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return image.CatAt(ctx, dl.m.store, c, offset)
	}
	dl.refs++
	dl.mu.Unlock()
	return &follower{dl: dl, ctx: ctx, off: offset, verified: verified}, nil
}

type follower struct {
	dl       *download
	ctx      context.Context
	off      int64
	verified bool
	closed   bool
}

func (f *follower) Read(p []byte) (int, error) {
	dl := f.dl
	for {
		dl.mu.Lock()
		size, written, err, done, ch := dl.size, dl.written, dl.err, dl.verified, dl.changed
		dl.mu.Unlock()
		// Bytes that matched are good to read even if keeping them failed.
		if err != nil && !done {
			return 0, err
		}
		limit := written
		if f.verified && !done && size >= 0 {
			limit = min(limit, size-1)
		}
		if size >= 0 && f.off >= size && (done || !f.verified) {
			return 0, io.EOF
		}
		if f.off < limit {
			n, err := dl.file.ReadAt(p[:min(int64(len(p)), limit-f.off)], f.off)
			f.off += int64(n)
			if n > 0 {
				return n, nil
			}
			if err != nil {
				return 0, err
			}
		}
		select {
		case <-ch:
		case <-f.ctx.Done():
			return 0, context.Cause(f.ctx)
		}
	}
}

func (f *follower) Close() error {
	if !f.closed {
		f.closed = true
		f.dl.release()
	}
	return nil
}
