package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/transport"
	"golang.org/x/sync/errgroup"
)

// PullOptions change a pull.
type PullOptions struct {
	// Timeout ends the pull when no block has arrived for this long; zero
	// waits as long as the context allows.
	Timeout time.Duration
	// Parallel is how many blobs are fetched at once.
	Parallel int
	Progress Progress
	// IPFSURLs writes the image as it is stored in IPFS: every descriptor
	// keeps its ipfs:// urls, and the indexes and manifests have the
	// digests the root names. By default the urls are left out (Tree's
	// Plain form, which shoal's registry serves too), because tools that
	// copy layouts (skopeo, crane) take a layer with urls for a foreign
	// layer and leave it behind.
	IPFSURLs bool
}

// ErrTimeout is the cause of a pull that saw no progress for its timeout.
var ErrTimeout = errkind.New("no peer sent the content in time", context.DeadlineExceeded)

// Pull fetches the image at root from the store's peers, verifies every
// blob against its digest, writes the image to dst and pins it.
func Pull(ctx context.Context, store Store, root cid.Cid, dst transport.Destination, opts PullOptions) (Result, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 6
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	ctx, kick, stop := IdleTimeout(ctx, opts.Timeout)
	defer stop()
	lease, err := TakeLease(ctx, store)
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", root, err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	p := &puller{store: store, lease: lease, dst: dst, opts: opts, kick: kick, seen: map[cid.Cid]bool{}}
	res, err := p.pull(ctx, root)
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", root, explainTimeout(ctx, err, opts.Timeout))
	}
	return res, nil
}

// explainTimeout turns the cancellation an idle timeout causes into an
// error that says what happened, not what it cancelled on its way.
func explainTimeout(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(context.Cause(ctx), ErrTimeout) {
		// What was waited for, without the cancellation that ended it.
		what := strings.TrimSuffix(err.Error(), ": "+context.Canceled.Error())
		return fmt.Errorf("%w: nothing arrived for %s (%s)", ErrTimeout, timeout, what)
	}
	return err
}

type puller struct {
	store Store
	lease Lease // keeps what is read until it is pinned
	dst   transport.Destination
	opts  PullOptions
	kick  func()

	// The walk that fills these runs before any blob is fetched.
	seen      map[cid.Cid]bool
	blobs     []ocispec.Descriptor // config and layers, to stream to dst
	docs      []docBlob            // indexes and manifests, already read
	cids      []string
	size      int64
	platforms []string
	attached  []cid.Cid // layer indexes, prefetch lists
	bounds    bounds
}

type docBlob struct {
	desc ocispec.Descriptor
	data []byte
}

func (p *puller) pull(ctx context.Context, root cid.Cid) (Result, error) {
	rootJSON, err := p.readRoot(ctx, root)
	if err != nil {
		return Result{}, err
	}
	top, err := ParseRoot(rootJSON)
	if err != nil {
		return Result{}, fmt.Errorf("%s is %w; pass the CID that `shoal push` printed", root, err)
	}
	p.cids = append(p.cids, root.String())
	if err := p.walk(ctx, top, 1); err != nil {
		return Result{}, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Parallel)
	for _, d := range p.blobs {
		p.opts.Progress.AddTotal(d.Size)
		g.Go(func() error { return p.fetchBlob(gctx, d) })
	}
	for _, c := range p.attached {
		g.Go(func() error { return p.fetchAttached(gctx, c) })
	}
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	written, docs := top, p.docs
	if !p.opts.IPFSURLs {
		if written, docs, err = plainDocs(top, p.docs); err != nil {
			return Result{}, err
		}
	}
	for _, doc := range docs {
		if err := p.dst.WriteBlob(ctx, doc.desc, bytes.NewReader(doc.data)); err != nil {
			return Result{}, err
		}
	}
	if err := p.dst.Commit(ctx, written); err != nil {
		return Result{}, fmt.Errorf("write %s: %w", p.dst.Reference(), err)
	}
	sort.Strings(p.platforms)
	img := catalog.Image{
		CID:       root.String(),
		Source:    URLScheme + root.String(),
		Platforms: append([]string{}, p.platforms...), // [] rather than null in JSON
		Size:      p.size,
		Created:   time.Now().UTC(),
		Blobs:     p.cids,
	}
	if err := p.store.PinImage(ctx, img); err != nil {
		return Result{}, err
	}
	return Result{Root: root, Image: img, Descriptor: written}, nil
}

// walk reads the indexes and manifests under d, depth documents down from
// the top, and lists their blobs.
func (p *puller) walk(ctx context.Context, d ocispec.Descriptor, depth int) error {
	c, err := CIDOf(d)
	if err != nil {
		return err
	}
	if !p.note(c, d) {
		return nil
	}
	p.attach(attachments(d.Annotations))
	if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
		p.blobs = append(p.blobs, d)
		return nil
	}
	data, err := p.readVerified(ctx, c, d, maxManifestSize)
	if err != nil {
		return err
	}
	if err := p.bounds.add(d, int64(len(data)), depth); err != nil {
		return err
	}
	p.docs = append(p.docs, docBlob{d, data})
	doc, err := ParseDocument(d.MediaType, data)
	if err != nil {
		return fmt.Errorf("manifest %s (%s): %w", d.Digest, c, err)
	}
	p.attach(attachments(doc.annotations()))
	if doc.Config == nil {
		for _, m := range doc.Manifests {
			if m.Platform != nil {
				p.addPlatform(formatPlatform(*m.Platform))
			}
			if err := p.walk(ctx, m, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if d.Platform == nil {
		cc, err := CIDOf(*doc.Config)
		if err != nil {
			return err
		}
		cfg, err := p.readVerified(ctx, cc, *doc.Config, maxConfigSize)
		if err != nil {
			return err
		}
		p.addPlatform(platformOf(cfg))
	}
	for _, b := range append([]ocispec.Descriptor{*doc.Config}, doc.Layers...) {
		if err := p.walk(ctx, b, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// note records a blob of the image once; it reports whether c is new.
func (p *puller) note(c cid.Cid, d ocispec.Descriptor) bool {
	if p.seen[c] {
		return false
	}
	p.seen[c] = true
	p.cids = append(p.cids, c.String())
	p.size += d.Size
	return true
}

// attach notes blobs attached to the image, to fetch and pin with it.
func (p *puller) attach(cs []cid.Cid) {
	for _, c := range cs {
		if !p.seen[c] {
			p.seen[c] = true
			p.cids = append(p.cids, c.String())
			p.attached = append(p.attached, c)
		}
	}
}

// fetchAttached reads an attached blob through the store, which keeps it.
func (p *puller) fetchAttached(ctx context.Context, c cid.Cid) error {
	rc, err := catKept(ctx, p.store, p.lease, c)
	if err != nil {
		return fmt.Errorf("attached blob %s: %w", c, err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, &countingReader{r: rc, progress: progressFunc(func(int64) { p.kick() })}); err != nil {
		return fmt.Errorf("attached blob %s: %w", c, err)
	}
	return nil
}

func (p *puller) addPlatform(s string) {
	if s != "" && !slices.Contains(p.platforms, s) {
		p.platforms = append(p.platforms, s)
	}
}

// fetchBlob streams a blob from the store, which fetches it from peers,
// into the destination, which verifies its size and digest. Where the
// store keeps the blob whole in one file and the destination takes links,
// the bytes are verified as they stream and the file is linked.
func (p *puller) fetchBlob(ctx context.Context, d ocispec.Descriptor) error {
	c, err := CIDOf(d)
	if err != nil {
		return err
	}
	// A blob an earlier pull already wrote is still read, so that it is
	// stored here and can be pinned.
	have, err := p.dst.Has(ctx, d)
	if err != nil {
		return err
	}
	linker, canLink := p.dst.(transport.Linker)
	files, hasFiles := p.store.(BlobFiles)
	link := !have && canLink && hasFiles
	// Where the pull checks the digest itself and the store can hash
	// the leaves and the blob in one pass, it does.
	var whole *sha256x.Stream
	var rc io.ReadCloser
	if hc, ok := p.store.(HashingCat); ok && link && sha256x.StreamAccelerated() && d.Digest.Algorithm() == digest.SHA256 {
		whole = sha256x.NewStream()
		if err = p.lease.Keep(ctx, c); err == nil {
			rc, err = hc.CatHashing(ctx, c, whole)
		}
	} else {
		rc, err = catKept(ctx, p.store, p.lease, c)
	}
	if err != nil {
		return fmt.Errorf("blob %s (%s): %w", d.Digest, c, err)
	}
	defer rc.Close()
	var r io.Reader = &countingReader{r: rc, progress: progressFunc(func(n int64) {
		p.kick()
		p.opts.Progress.Add(n)
	})}
	// Reading ahead puts the digest check and the store's work on two
	// cores; when the store hashes the digest itself, it would only copy.
	if whole == nil {
		ahead := readAhead(r)
		defer ahead.Close()
		r = ahead
	}
	switch {
	case have:
		_, err = io.Copy(io.Discard, r)
	case link:
		err = verifyHashed(r, d, whole)
		if err == nil {
			err = p.linkBlob(ctx, c, d, linker, files)
		}
	default:
		err = p.dst.WriteBlob(ctx, d, r)
	}
	if err != nil {
		return fmt.Errorf("blob %s (%s): %w", d.Digest, c, err)
	}
	return nil
}

// verifyHashed reads r to its end and checks it against d, with the
// digest whole has of r's bytes if whole is set (the store fed it as r
// was read: CatHashing), else hashing them here.
func verifyHashed(r io.Reader, d ocispec.Descriptor, whole *sha256x.Stream) error {
	if whole == nil {
		return transport.VerifyReader(r, d)
	}
	v, err := transport.NewSizeVerifier(r, d)
	if err != nil {
		return err
	}
	if err := v.Drain(); err != nil {
		return err
	}
	return v.Check(streamDigest(whole))
}

// linkBlob puts the blob c, just read and verified as d, into the
// destination: a link to the store's file of it, else a copy from the
// store.
func (p *puller) linkBlob(ctx context.Context, c cid.Cid, d ocispec.Descriptor, linker transport.Linker, files BlobFiles) error {
	path, size, ok, err := files.BlobFile(ctx, c)
	if err == nil && ok && size == d.Size {
		if linker.LinkBlob(ctx, d, path) == nil {
			return nil
		}
	}
	rc, err := catKept(ctx, p.store, p.lease, c)
	if err != nil {
		return err
	}
	defer rc.Close()
	return p.dst.WriteBlob(ctx, d, rc)
}

// readRoot reads an image's root blob. A CID that is there but cannot be
// read as a file (a directory, say) is not an image; one that never
// arrives is reported as such by the caller.
func (p *puller) readRoot(ctx context.Context, root cid.Cid) ([]byte, error) {
	data, err := p.readSmall(ctx, root, maxRootSize)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w (%v); pass the CID that `shoal push` printed", ErrNotImage, err)
	}
	return data, err
}

// readSmall reads a small blob whole.
func (p *puller) readSmall(ctx context.Context, c cid.Cid, limit int64) ([]byte, error) {
	rc, err := catKept(ctx, p.store, p.lease, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(&countingReader{r: rc, progress: progressFunc(func(int64) { p.kick() })}, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is over the %d-byte limit", c, limit)
	}
	return data, nil
}

func (p *puller) readVerified(ctx context.Context, c cid.Cid, d ocispec.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("blob %s: %d bytes is over the %d-byte limit for %s", d.Digest, d.Size, limit, d.MediaType)
	}
	data, err := p.readSmall(ctx, c, limit)
	if err != nil {
		return nil, fmt.Errorf("blob %s (%s): %w", d.Digest, c, err)
	}
	if err := transport.VerifyReader(bytes.NewReader(data), d); err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, c)
	}
	return data, nil
}

// progressFunc counts bytes for a reader of its own.
type progressFunc func(n int64)

func (f progressFunc) AddTotal(int64) {}
func (f progressFunc) Add(n int64)    { f(n) }

// IdleTimeout returns a context that ends with ErrTimeout once kick has not
// been called for d. With d zero it never times out.
func IdleTimeout(parent context.Context, d time.Duration) (ctx context.Context, kick func(), stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	if d <= 0 {
		return ctx, func() {}, func() { cancel(nil) }
	}
	t := time.AfterFunc(d, func() { cancel(ErrTimeout) })
	return ctx, func() { t.Reset(d) }, func() { t.Stop(); cancel(nil) }
}
