// Package snapshotter is shoal's containerd snapshotter: overlayfs
// snapshots whose lower layers may be layers mounted lazily from IPFS.
//
// containerd's remote-snapshot protocol drives it. When containerd
// prepares a layer's snapshot with the label containerd.io/snapshot.ref
// (the layer's chain ID) and the snapshot's labels lead to a layer shoal
// has indexed, the snapshotter mounts that layer from IPFS, commits it
// under the chain ID and answers "already exists": containerd then skips
// download and unpack. Every other snapshot is an ordinary overlayfs one.
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
	"github.com/shoal-ipfs/shoal/pkg/store"
	"golang.org/x/sync/singleflight"
)

// Store is what the snapshotter needs of a node: the layers' blobs and
// indexes, and holds to keep the indexes of mounted layers.
type Store interface {
	lazyfs.Store
	store.Holder
}

// Resolver finds the layer that a snapshot's labels name: a descriptor
// with the layer's CID and index annotations. An error wrapping
// errdefs.ErrNotFound means the labels name no such layer, and the
// snapshot is an ordinary one.
type Resolver func(ctx context.Context, labels map[string]string) (ocispec.Descriptor, error)

// Option changes a Snapshotter.
type Option func(*Snapshotter)

// WithLogger sets where the snapshotter reports what it does.
func WithLogger(l *slog.Logger) Option { return func(s *Snapshotter) { s.log = l } }

// WithResolver lets the snapshotter mount layers lazily; without one,
// every snapshot is an ordinary one.
func WithResolver(r Resolver) Option { return func(s *Snapshotter) { s.resolve = r } }

// WithFetchTimeout bounds how long preparing a lazy layer waits for its
// index, and each read of its files waits for peers.
func WithFetchTimeout(d time.Duration) Option { return func(s *Snapshotter) { s.timeout = d } }

// WithFileCache keeps the files that lazy layers' readers read whole in c
// and serves them from there.
func WithFileCache(c *lazyfs.FileCache) Option { return func(s *Snapshotter) { s.cache = c } }

// Snapshotter implements containerd's snapshots.Snapshotter.
//
// Under its root:
//
//	metadata.db            containerd's snapshot metadata store
//	snapshots/ID/fs        the snapshot's directory: overlayfs's upper
//	                       directory, or the mount point of a lazy layer
//	snapshots/ID/work      overlayfs's work directory (active snapshots)
//	snapshots/ID/layer.json the descriptor of a lazy layer
type Snapshotter struct {
	root    string
	ms      *storage.MetaStore
	store   Store
	resolve Resolver
	timeout time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	lazy map[string]*lazyMount // by snapshot ID
	// mounting serializes lazy prepares of one layer on one parent.
	mounting singleflight.Group
	stats    *lazyfs.Stats
	cache    *lazyfs.FileCache // nil: none
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)
var _ snapshots.Cleaner = (*Snapshotter)(nil)

// New opens the snapshotter at root and mounts the lazy layers it had
// committed before.
func New(ctx context.Context, root string, store Store, opts ...Option) (*Snapshotter, error) {
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	s := &Snapshotter{
		root: root, ms: ms, store: store,
		timeout: lazyfs.DefaultReadTimeout,
		log:     slog.New(slog.DiscardHandler),
		lazy:    map[string]*lazyMount{},
		stats:   &lazyfs.Stats{},
	}
	for _, o := range opts {
		o(s)
	}
	s.restore(ctx)
	return s, nil
}

// Stats counts the reads of every lazy layer mounted since the start.
func (s *Snapshotter) Stats() *lazyfs.Stats { return s.stats }

func (s *Snapshotter) dir(id string) string   { return filepath.Join(s.root, "snapshots", id) }
func (s *Snapshotter) fsDir(id string) string { return filepath.Join(s.dir(id), "fs") }

func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

func (s *Snapshotter) Usage(ctx context.Context, key string) (usage snapshots.Usage, err error) {
	var (
		id   string
		info snapshots.Info
	)
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil || info.Kind != snapshots.KindActive {
		return usage, err
	}
	du, err := fs.DiskUsage(ctx, s.fsDir(id))
	if err != nil {
		return usage, fmt.Errorf("usage of %s: %w", key, err)
	}
	return snapshots.Usage{Size: du.Size, Inodes: du.Inodes}, nil
}

func (s *Snapshotter) Mounts(ctx context.Context, key string) (ms []mount.Mount, err error) {
	var snap storage.Snapshot
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of %s: %w", key, err)
	}
	return s.mounts(ctx, snap)
}

func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	if target := base.Labels[snapshots.LabelSnapshotRef]; target != "" && s.resolve != nil {
		err := s.prepareLazy(ctx, key, parent, target, base.Labels)
		if err == nil {
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
		if !errdefs.IsNotFound(err) {
			s.log.Warn("snapshotter: layer not mounted lazily; containerd unpacks it instead", "snapshot", target, "err", err)
		}
	}
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if info.Kind != snapshots.KindActive {
			return fmt.Errorf("commit %s: %s is not active: %w", name, key, errdefs.ErrFailedPrecondition)
		}
		du, err := fs.DiskUsage(ctx, s.fsDir(id))
		if err != nil {
			return fmt.Errorf("commit %s: %w", name, err)
		}
		_, err = storage.CommitActive(ctx, key, name, snapshots.Usage{Size: du.Size, Inodes: du.Inodes}, opts...)
		return err
	})
}

// Remove forgets key and deletes its directory. containerd's metadata
// refuses to remove a snapshot others stand on, so a lazy layer in use by
// a container stays mounted.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	if err := s.unmountLazy(id); err != nil {
		s.log.Warn("snapshotter: unmount of a removed layer", "snapshot", key, "err", err)
	}
	if err := s.store.Release(ctx, holdName(id)); err != nil {
		s.log.Warn("snapshotter: release of a removed layer's index", "snapshot", key, "err", err)
	}
	if err := os.RemoveAll(s.dir(id)); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	return nil
}

func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Cleanup deletes the directories of snapshots the metadata no longer
// knows, left by a removal that stopped half way.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var ids map[string]string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		ids, err = storage.IDMap(ctx)
		return err
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, "snapshots"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, known := ids[e.Name()]; known {
			continue
		}
		_ = s.unmountLazy(e.Name())
		if err := os.RemoveAll(s.dir(e.Name())); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}

// Close unmounts the lazy layers. Containers still running on them lose
// their files: the daemon stops serving them.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	ids := make([]string, 0, len(s.lazy))
	for id := range s.lazy {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.unmountLazy(id))
	}
	return errors.Join(append(errs, s.ms.Close())...)
}

// create makes an active or view snapshot with its directories.
func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return err
		}
		if err := s.makeDirs(snap); err != nil {
			os.RemoveAll(s.dir(snap.ID))
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	return s.mounts(ctx, snap)
}

func (s *Snapshotter) makeDirs(snap storage.Snapshot) error {
	dir := s.dir(snap.ID)
	// A directory by this ID is a leftover of a transaction that failed.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "fs"), 0o755); err != nil {
		return err
	}
	if snap.Kind == snapshots.KindActive {
		if err := os.Mkdir(filepath.Join(dir, "work"), 0o711); err != nil {
			return err
		}
	}
	if len(snap.ParentIDs) > 0 {
		// The upper directory is the root of the container's view: it
		// takes the owner of the root it covers.
		st, err := os.Stat(s.fsDir(snap.ParentIDs[0]))
		if err != nil {
			return err
		}
		if err := chownLike(filepath.Join(dir, "fs"), st); err != nil {
			return err
		}
	}
	return nil
}

// mounts are what containerd mounts for snap: a bind mount of a lone
// directory, or overlayfs over its parents, the nearest first.
func (s *Snapshotter) mounts(ctx context.Context, snap storage.Snapshot) ([]mount.Mount, error) {
	for _, id := range snap.ParentIDs {
		if err := s.ensureMounted(ctx, id); err != nil {
			return nil, err
		}
	}
	ro := snap.Kind == snapshots.KindView
	bind := func(dir string, ro bool) []mount.Mount {
		opt := "rw"
		if ro {
			opt = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: dir, Options: []string{opt, "rbind"}}}
	}
	switch {
	case len(snap.ParentIDs) == 0:
		return bind(s.fsDir(snap.ID), ro), nil
	case ro && len(snap.ParentIDs) == 1:
		return bind(s.fsDir(snap.ParentIDs[0]), true), nil
	}
	lower := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		lower[i] = s.fsDir(id)
	}
	// index=off: lazy layers are FUSE mounts, whose file handles
	// overlayfs's index cannot keep.
	opts := []string{"index=off"}
	if !ro {
		opts = append(opts, "workdir="+filepath.Join(s.dir(snap.ID), "work"), "upperdir="+s.fsDir(snap.ID))
	}
	opts = append(opts, "lowerdir="+strings.Join(lower, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}
