package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// Mirrored images become images of the node like pushed ones: once every
// blob of a manifest pulled by tag is here, the image is converted to
// shoal's format (its layers indexed for lazy mounts) and pinned under
// its root CID, with REGISTRY/REPOSITORY:TAG as its source, so that
// `shoal images` lists it and it can be pulled by CID, sharded and
// mounted. The conversion stores only the new documents: the blobs are
// the mirrored ones. It waits while the node passes blobs along, so that
// indexing the layers does not take the CPU a rollout is using.

// pendingImage is a manifest served by tag whose blobs may still be on
// their way.
type pendingImage struct {
	ref   Ref
	tag   string
	top   ocispec.Descriptor
	since time.Time
}

const (
	// convertEvery is how often pending images are looked at.
	convertEvery = 2 * time.Second
	// convertWait is how long a conversion waits while the node passes
	// blobs along (passing): indexing inflates every layer, most of a
	// core for a second per 100 MB, and every node of a rollout keeps
	// passing the image on until the last of its peers has it.
	convertWait = 5 * time.Minute
	// pendingFor is how long a manifest waits for its blobs: containerd
	// fetches only its own platform's, and an image is converted with
	// the platforms that are whole by then.
	pendingFor = 10 * time.Minute
)

// imageRecord is a converted mirrored image.
type imageRecord struct {
	Root   string        `json:"root"`
	Digest digest.Digest `json:"digest"`
}

func imageKey(r Ref, tag string) ds.Key {
	return refKey("/image", r).ChildString(tag)
}

func (m *Mirror) notePending(r Ref, tag string, top ocispec.Descriptor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := r.String() + ":" + tag + "@" + top.Digest.String()
	if _, ok := m.pending[k]; !ok && len(m.pending) < 4096 {
		r.Auth = ""
		m.pending[k] = &pendingImage{ref: r, tag: tag, top: top, since: time.Now()}
	}
}

// convertPending converts the pending images whose blobs are here.
func (m *Mirror) convertPending(ctx context.Context) {
	busy := m.passing()
	m.mu.Lock()
	var todo []*pendingImage
	for k, p := range m.pending {
		if time.Since(p.since) > pendingFor {
			delete(m.pending, k)
			continue
		}
		if busy && time.Since(p.since) < convertWait {
			continue
		}
		todo = append(todo, p)
	}
	m.mu.Unlock()
	for _, p := range todo {
		done, err := m.convert(ctx, p)
		if err != nil {
			m.log.Info("mirror: keeping a mirrored image as an image failed", "image", p.ref.String()+":"+p.tag, "err", err)
		}
		if done || err != nil {
			m.mu.Lock()
			delete(m.pending, p.ref.String()+":"+p.tag+"@"+p.top.Digest.String())
			m.mu.Unlock()
		}
	}
}

// passing reports whether the node is passing blobs along: a download
// running, or a peer reading a stored blob from here.
func (m *Mirror) passing() bool {
	m.mu.Lock()
	downloads := len(m.downloads)
	m.mu.Unlock()
	return downloads > 0 || (m.opts.Peers != nil && m.opts.Peers.serving())
}

// convert makes p an image of the node if its blobs are here; done says
// whether p needs no more looking at.
func (m *Mirror) convert(ctx context.Context, p *pendingImage) (done bool, err error) {
	var old imageRecord
	if data, err := m.meta.Get(ctx, imageKey(p.ref, p.tag)); err == nil && json.Unmarshal(data, &old) == nil && old.Digest == p.top.Digest {
		return true, nil
	}
	var platforms []ocispec.Platform
	if transport.IsIndex(p.top.MediaType) {
		var idx ocispec.Index
		if err := m.readJSON(ctx, p.top.Digest, &idx); err != nil {
			return false, err
		}
		for _, md := range idx.Manifests {
			if md.Platform != nil && m.wholeManifest(ctx, md.Digest) {
				platforms = append(platforms, *md.Platform)
			}
		}
		if len(platforms) == 0 {
			return false, nil
		}
	} else if !m.wholeManifest(ctx, p.top.Digest) {
		return false, nil
	}
	src := &mirrorSource{m: m, ref: p.ref.String() + ":" + p.tag, top: p.top}
	res, err := image.Push(ctx, m.store, src, image.PushOptions{Index: true, Platforms: platforms})
	if err != nil {
		return false, err
	}
	data, err := json.Marshal(imageRecord{Root: res.Root.String(), Digest: p.top.Digest})
	if err != nil {
		return false, err
	}
	if err := m.meta.Put(ctx, imageKey(p.ref, p.tag), data); err != nil {
		return false, err
	}
	if old.Root != "" && old.Root != res.Root.String() {
		// The tag moved: the image it named before is the mirror's no more.
		if c, err := cid.Decode(old.Root); err == nil {
			_ = m.store.RemoveImage(ctx, c)
		}
	}
	m.log.Info("mirror: mirrored image kept", "image", src.ref, "digest", p.top.Digest, "root", res.Root, "platforms", len(platforms))
	return true, nil
}

// wholeManifest tells whether manifest d and every blob it names are here.
func (m *Mirror) wholeManifest(ctx context.Context, d digest.Digest) bool {
	var man ocispec.Manifest
	if err := m.readJSON(ctx, d, &man); err != nil {
		return false
	}
	for _, b := range append([]ocispec.Descriptor{man.Config}, man.Layers...) {
		if _, ok, err := m.lookup(ctx, b.Digest); err != nil || !ok {
			return false
		}
	}
	return true
}

func (m *Mirror) readJSON(ctx context.Context, d digest.Digest, v any) error {
	rec, ok, err := m.lookup(ctx, d)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not here", d)
	}
	desc, err := rec.descriptor(d)
	if err != nil {
		return err
	}
	data, err := m.readDoc(ctx, desc)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// mirrorSource reads a mirrored image from the mirror's records.
type mirrorSource struct {
	m   *Mirror
	ref string
	top ocispec.Descriptor
}

func (s *mirrorSource) Reference() string                                { return s.ref }
func (s *mirrorSource) Root(context.Context) (ocispec.Descriptor, error) { return s.top, nil }
func (s *mirrorSource) Close() error                                     { return nil }

func (s *mirrorSource) Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	c, ok := s.StoredCID(d)
	if !ok {
		return nil, fmt.Errorf("%s is not mirrored here", d.Digest)
	}
	return s.m.store.Cat(ctx, c)
}

// StoredCID lets the conversion name mirrored blobs rather than add them.
func (s *mirrorSource) StoredCID(d ocispec.Descriptor) (cid.Cid, bool) {
	rec, ok, err := s.m.lookup(context.Background(), d.Digest)
	if err != nil || !ok {
		return cid.Undef, false
	}
	c, err := cid.Decode(rec.CID)
	return c, err == nil
}

// Image is a mirrored image kept as an image of the node.
type Image struct {
	// Name is REGISTRY/REPOSITORY:TAG.
	Name string `json:"name"`
	// Digest is the tag's manifest or index, as the registry serves it.
	Digest digest.Digest `json:"digest"`
	// Root is the image's root CID in shoal's format.
	Root string `json:"root"`
}

// Images lists the mirrored images kept as images of the node.
func (m *Mirror) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	err := m.each(ctx, "/image", func(key string, value []byte) {
		parts := ds.NewKey(key).List()
		var rec imageRecord
		if len(parts) == 4 && json.Unmarshal(value, &rec) == nil {
			out = append(out, Image{Name: parts[1] + "/" + strings.ReplaceAll(parts[2], "+", "/") + ":" + parts[3], Digest: rec.Digest, Root: rec.Root})
		}
	})
	return out, err
}

// each calls f with every record under prefix.
func (m *Mirror) each(ctx context.Context, prefix string, f func(key string, value []byte)) error {
	res, err := m.meta.Query(ctx, query.Query{Prefix: prefix})
	if err != nil {
		return err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		f(e.Key, e.Value)
	}
	return nil
}

// every runs f every period until ctx ends.
func every(ctx context.Context, period time.Duration, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}
