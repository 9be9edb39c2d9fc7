package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// record is what the mirror knows of a digest it holds.
type record struct {
	CID       string `json:"cid"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType,omitempty"` // manifests and indexes
	// Private marks content of a repository the upstream does not serve
	// anonymously: peers get it only in a private swarm.
	Private bool `json:"private,omitempty"`
	// Used is when it was last served (to a minute), for the budget.
	Used time.Time `json:"used"`
}

func (r record) descriptor(d digest.Digest) (ocispec.Descriptor, error) {
	c, err := cid.Decode(r.CID)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("mirror record of %s: %w", d, err)
	}
	return image.WithCID(ocispec.Descriptor{MediaType: r.MediaType, Digest: d, Size: r.Size}, c), nil
}

// lookup returns the record of d, if the mirror holds it.
func (m *Mirror) lookup(ctx context.Context, d digest.Digest) (record, bool, error) {
	data, err := m.meta.Get(ctx, blobKey(d))
	if errors.Is(err, ds.ErrNotFound) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, false, fmt.Errorf("mirror record of %s: %w", d, err)
	}
	return r, true, nil
}

// record keeps blob d, whose bytes have been checked against it.
func (m *Mirror) record(ctx context.Context, d digest.Digest, r record) error {
	r.Used = time.Now().UTC()
	c, err := cid.Decode(r.CID)
	if err != nil {
		return err
	}
	// Read under its CID a moment ago, maybe from peers, and not yet
	// held: a lease keeps it from a collection meanwhile.
	err = image.WithLease(ctx, m.store, func(l image.Lease) error {
		if err := l.Keep(ctx, c); err != nil {
			return err
		}
		return m.store.Hold(ctx, holdName(d), c)
	})
	if err != nil {
		return fmt.Errorf("keep %s: %w", d, err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := m.meta.Put(ctx, blobKey(d), data); err != nil {
		return err
	}
	if err := m.meta.Sync(ctx, blobKey(d)); err != nil {
		return err
	}
	if m.opts.Peers != nil {
		m.opts.Peers.announce(d)
	}
	return nil
}

// blob finds blob d of r: stored here, on its way here, else it is
// downloaded from a peer that is fetching it, a peer that holds it, or the
// upstream, in that order (sources).
func (m *Mirror) blob(ctx context.Context, r Ref, d digest.Digest, mediaType string) (Blob, error) {
	if d.Algorithm() != digest.SHA256 {
		return Blob{}, fmt.Errorf("blob %s: only sha256 digests are mirrored: %w", d, errdefs.ErrNotFound)
	}
	if rec, ok, err := m.lookup(ctx, d); err != nil {
		return Blob{}, err
	} else if ok {
		desc, err := rec.descriptor(d)
		if err != nil {
			return Blob{}, err
		}
		m.touch(ctx, d, rec)
		return Blob{Descriptor: desc, Served: m.served(r, "local", desc.Size)}, nil
	}
	if dl := m.joinDownload(d); dl != nil {
		return dl.blob(ctx, r)
	}
	private := m.access.private(r)
	var answers []answer
	if m.opts.Peers != nil {
		answers = m.opts.Peers.ask(ctx, r, d)
	}
	sources, err := m.sources(r, d, answers)
	if err != nil {
		return Blob{}, err
	}
	dl, err := m.startDownload(r, d, mediaType, private, sources)
	if err != nil {
		return Blob{}, err
	}
	return dl.blob(ctx, r)
}

// sources are where a download that no peer can serve whole reads from:
// peers fetching the blob now, else the peer ranked first for it among
// those that mirror the registry (which fetches it from the upstream for
// all), else the upstream; the upstream last in every case.
func (m *Mirror) sources(r Ref, d digest.Digest, answers []answer) ([]source, error) {
	var out []source
	if p := m.opts.Peers; p != nil {
		out = p.sources(r, d, answers)
	}
	if m.upstreamDown(r.Registry) && len(out) == 0 {
		return nil, errUpstreamDown(r.Registry)
	}
	u, err := m.upstream(r.Registry)
	if err != nil {
		return nil, err
	}
	out = append(out, source{name: "upstream", from: r.Registry, open: func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		m.metrics.upstreamRequests.WithLabelValues(r.Registry, "blob").Inc()
		rc, size, err := u.Blob(ctx, r.Repo, d, offset, m.access.upstreamAuth(r))
		m.noteUpstream(r.Registry, err)
		return rc, size, err
	}})
	return out, nil
}

// blob is what a request for the download's blob gets, once its size is
// known.
func (dl *download) blob(ctx context.Context, r Ref) (Blob, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	size, err := dl.waitSize(ctx)
	if err != nil {
		return Blob{}, fmt.Errorf("blob %s: %w", dl.digest, err)
	}
	counter := dl.m.metrics.served.WithLabelValues(r.Registry, "fetching")
	return Blob{
		Descriptor: ocispec.Descriptor{MediaType: dl.mediaType, Digest: dl.digest, Size: size},
		Open: func(ctx context.Context, offset int64) (io.ReadCloser, error) {
			rd, err := dl.follow(ctx, offset, true)
			if err != nil {
				return nil, err
			}
			return countingReader{rd, counter}, nil
		},
	}, nil
}

// served counts a blob served whole from where it was.
func (m *Mirror) served(r Ref, from string, size int64) func() {
	c := m.metrics.served.WithLabelValues(r.Registry, from)
	return func() { c.Add(float64(size)) }
}

// manifestByDigest reads manifest d: stored here, held by a peer, or
// from the upstream. Manifests are small: they are read whole and checked
// before they are served.
func (m *Mirror) manifestByDigest(ctx context.Context, r Ref, d digest.Digest) ([]byte, ocispec.Descriptor, error) {
	if rec, ok, err := m.lookup(ctx, d); err != nil {
		return nil, ocispec.Descriptor{}, err
	} else if ok {
		desc, err := rec.descriptor(d)
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		if data, err := m.readDoc(ctx, desc); err == nil {
			m.touch(ctx, d, rec)
			m.served(r, "local", desc.Size)()
			return data, plain(desc), nil
		} else {
			m.log.Warn("mirror: a stored manifest could not be read", "digest", d, "err", err)
		}
	}
	private := m.access.private(r)
	if p := m.opts.Peers; p != nil {
		for _, a := range p.ask(ctx, r, d) {
			if a.State != stateStored || a.MediaType == "" {
				continue
			}
			rec := record{CID: a.CID, Size: a.Size, MediaType: a.MediaType, Private: private}
			desc, err := rec.descriptor(d)
			if err != nil {
				continue
			}
			data, err := m.readDoc(ctx, desc)
			if err != nil {
				m.log.Info("mirror: a manifest from a peer did not verify", "digest", d, "err", err)
				continue
			}
			m.keepDoc(d, func(ctx context.Context) error { return m.record(ctx, d, rec) })
			m.served(r, "peer", desc.Size)()
			return data, plain(desc), nil
		}
	}
	if m.upstreamDown(r.Registry) {
		return nil, ocispec.Descriptor{}, errUpstreamDown(r.Registry)
	}
	u, err := m.upstream(r.Registry)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	m.metrics.upstreamRequests.WithLabelValues(r.Registry, "manifest").Inc()
	data, desc, err := u.Manifest(ctx, r.Repo, d.String(), m.access.upstreamAuth(r))
	m.noteUpstream(r.Registry, err)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if desc.Digest != d {
		return nil, ocispec.Descriptor{}, fmt.Errorf("upstream %s sent %s for manifest %s: %w", r.Registry, desc.Digest, d, errdefs.ErrDataLoss)
	}
	m.keepDoc(d, func(ctx context.Context) error {
		return image.WithLease(ctx, m.store, func(image.Lease) error {
			c, err := m.store.Add(ctx, bytes.NewReader(data))
			if err != nil {
				return fmt.Errorf("store manifest %s: %w", d, err)
			}
			return m.record(ctx, d, record{CID: c.String(), Size: int64(len(data)), MediaType: desc.MediaType, Private: private})
		})
	})
	m.served(r, "upstream", int64(len(data)))()
	return data, desc, nil
}

// keepTimeout bounds the keeping of a manifest served a moment ago.
const keepTimeout = time.Minute

// keepDoc stores and records manifest d, its bytes verified and served
// already, off the response's path: the record's pin and sync can take a
// good part of a second on a busy disk, and every node of a rollout would
// wait for it before it asks for the image's blobs. Close waits for it.
func (m *Mirror) keepDoc(d digest.Digest, keep func(context.Context) error) {
	m.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), keepTimeout)
		defer cancel()
		if err := keep(ctx); err != nil {
			m.log.Warn("mirror: keeping a manifest failed; it is fetched again when next asked for", "digest", d, "err", err)
		}
	})
}

// readDoc reads a manifest by its CID, whole, and checks its digest.
func (m *Mirror) readDoc(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	c, err := image.CIDOf(desc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := m.store.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	const maxManifest = 4 << 20
	data, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != desc.Size || digest.FromBytes(data) != desc.Digest {
		return nil, fmt.Errorf("manifest %s under %s: the bytes do not match: %w", desc.Digest, c, errdefs.ErrDataLoss)
	}
	return data, nil
}

// plain is a descriptor without the CID, as clients see it.
func plain(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}
