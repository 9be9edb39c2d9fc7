package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	ds "github.com/ipfs/go-datastore"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tagRecord is a tag as last resolved at the upstream.
type tagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	Resolved  time.Time     `json:"resolved"`
}

func (t tagRecord) descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: t.MediaType, Digest: t.Digest, Size: t.Size}
}

// refKey is where a record of repository r lives under prefix;
// repositories hold slashes, which keys would take for levels, and no "+",
// which stands in for them.
func refKey(prefix string, r Ref) ds.Key {
	return ds.NewKey(prefix).ChildString(r.Registry).ChildString(strings.ReplaceAll(r.Repo, "/", "+"))
}

// tagKey is where a tag's record lives.
func tagKey(registry, repo, tag string) ds.Key {
	return refKey("/tag", Ref{Registry: registry, Repo: repo}).ChildString(tag)
}

func (m *Mirror) tagRecord(ctx context.Context, r Ref, tag string) (tagRecord, bool, error) {
	data, err := m.meta.Get(ctx, tagKey(r.Registry, r.Repo, tag))
	if errors.Is(err, ds.ErrNotFound) {
		return tagRecord{}, false, nil
	}
	if err != nil {
		return tagRecord{}, false, err
	}
	var t tagRecord
	if err := json.Unmarshal(data, &t); err != nil || t.Digest.Validate() != nil {
		return tagRecord{}, false, fmt.Errorf("mirror record of tag %s:%s: %v", r, tag, err)
	}
	return t, true, nil
}

func (m *Mirror) putTag(ctx context.Context, r Ref, tag string, t tagRecord) error {
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return m.meta.Put(ctx, tagKey(r.Registry, r.Repo, tag), data)
}

// resolveTag finds what tag names: the record made within the TTL, else
// the upstream's answer (the one the access check just had, if it asked
// the same), else, while the upstream does not answer, the last digest
// known here or to a peer.
func (m *Mirror) resolveTag(ctx context.Context, r Ref, tag string, checked answered) (ocispec.Descriptor, error) {
	rec, known, err := m.tagRecord(ctx, r, tag)
	if err != nil {
		m.log.Warn("mirror: dropping an unreadable tag record", "tag", r.String()+":"+tag, "err", err)
		known = false
	}
	if known && time.Since(rec.Resolved) < m.opts.TagTTL {
		m.metrics.tags.WithLabelValues(r.Registry, "hit").Inc()
		return rec.descriptor(), nil
	}
	m.metrics.tags.WithLabelValues(r.Registry, "miss").Inc()
	upErr := errUpstreamDown(r.Registry)
	if !m.upstreamDown(r.Registry) {
		desc, auth := checked.desc, m.access.upstreamAuth(r)
		var err error
		if desc.Digest == "" || checked.auth != auth {
			u, uerr := m.upstream(r.Registry)
			if uerr != nil {
				return ocispec.Descriptor{}, uerr
			}
			m.metrics.upstreamRequests.WithLabelValues(r.Registry, "resolve").Inc()
			desc, err = u.Resolve(ctx, r.Repo, tag, auth)
			m.noteUpstream(r.Registry, err)
		}
		if err == nil {
			t := tagRecord{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Resolved: time.Now().UTC()}
			if err := m.putTag(ctx, r, tag, t); err != nil {
				return ocispec.Descriptor{}, err
			}
			return t.descriptor(), nil
		}
		if !errdefs.IsUnavailable(err) {
			return ocispec.Descriptor{}, err
		}
		upErr = err
	}
	// The upstream does not answer: the newest digest known in the swarm.
	if p := m.opts.Peers; p != nil {
		if t, ok := p.askTag(ctx, r, tag); ok && (!known || t.Resolved.After(rec.Resolved)) {
			rec, known = t, true
			if err := m.putTag(ctx, r, tag, t); err != nil {
				return ocispec.Descriptor{}, err
			}
		}
	}
	if known {
		m.log.Info("mirror: serving a tag as last known while the upstream does not answer", "tag", r.String()+":"+tag, "digest", rec.Digest, "resolved", rec.Resolved, "err", upErr)
		return rec.descriptor(), nil
	}
	return ocispec.Descriptor{}, upErr
}

// Forget drops tag's record here and, when peers is true, on every peer
// connected: its next request asks the upstream again.
func (m *Mirror) Forget(ctx context.Context, r Ref, tag string, peers bool) error {
	if err := m.meta.Delete(ctx, tagKey(r.Registry, r.Repo, tag)); err != nil {
		return err
	}
	if p := m.opts.Peers; p != nil && peers {
		p.forget(ctx, r, tag)
	}
	return nil
}
