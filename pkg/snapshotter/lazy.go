package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/hanwen/go-fuse/v2/fuse"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/lazyfs"
)

// LabelLayer names, on a lazy layer's committed snapshot, the layer's
// CID (`ctr snapshots info` shows it).
const LabelLayer = "io.shoal.snapshot.layer"

// lazyMount is a layer mounted from IPFS as a snapshot's directory.
type lazyMount struct {
	layer  *lazyfs.LayerFS
	server *fuse.Server
	dir    string
}

func holdName(id string) string { return "snapshotter/" + id }

func (s *Snapshotter) layerFile(id string) string { return filepath.Join(s.dir(id), "layer.json") }

// prepareLazy commits target, on parent, as the lazily mounted layer the
// labels name. It returns nil when target exists, mounted now or before.
func (s *Snapshotter) prepareLazy(ctx context.Context, key, parent, target string, labels map[string]string) error {
	if info, err := s.Stat(ctx, target); err == nil {
		if info.Kind == snapshots.KindCommitted && info.Parent == parent {
			return nil
		}
		return fmt.Errorf("snapshot %s exists on parent %q, not %q: %w", target, info.Parent, parent, errdefs.ErrNotFound)
	}
	desc, err := s.resolve(ctx, labels)
	if err != nil {
		return err
	}
	// Two prepares of one layer (containerd unpacking two images that
	// share it) mount it once; the second finds it committed.
	_, err, _ = s.mounting.Do(target+"\x00"+parent, func() (any, error) {
		if info, err := s.Stat(ctx, target); err == nil && info.Kind == snapshots.KindCommitted {
			return nil, nil
		}
		return nil, s.commitLazy(ctx, key, parent, target, desc, labels)
	})
	return err
}

// commitLazy mounts the layer desc and commits it as target.
func (s *Snapshotter) commitLazy(ctx context.Context, key, parent, target string, desc ocispec.Descriptor, labels map[string]string) error {
	lf, err := lazyfs.OpenLayer(ctx, s.store, desc, s.timeout, s.stats)
	if err != nil {
		return err
	}
	lf.SetReadTimeout(s.timeout)
	committed := map[string]string{}
	for k, v := range labels {
		committed[k] = v
	}
	if u := desc.URLs; len(u) > 0 {
		committed[LabelLayer] = u[0]
	}
	var (
		id      string
		mounted bool
	)
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		snap, err := storage.CreateSnapshot(ctx, snapshots.KindActive, key, parent, snapshots.WithLabels(committed))
		if err != nil {
			return err
		}
		id = snap.ID
		if err := s.makeDirs(snap); err != nil {
			return err
		}
		data, err := json.Marshal(desc)
		if err != nil {
			return err
		}
		if err := os.WriteFile(s.layerFile(id), data, 0o600); err != nil {
			return err
		}
		if err := s.store.Hold(ctx, holdName(id), lf.Index); err != nil {
			return err
		}
		if err := s.mountLayer(id, lf); err != nil {
			return err
		}
		mounted = true
		size, inodes := lf.Tree.Usage()
		_, err = storage.CommitActive(ctx, key, target, snapshots.Usage{Size: size, Inodes: inodes}, snapshots.WithLabels(committed))
		return err
	})
	if err != nil {
		if mounted {
			_ = s.unmountLazy(id) // closes lf
		} else {
			lf.Close()
		}
		if id != "" {
			_ = s.store.Release(context.WithoutCancel(ctx), holdName(id))
			os.RemoveAll(s.dir(id))
		}
		return fmt.Errorf("lazy layer %s: %w", desc.Digest, err)
	}
	s.log.Info("snapshotter: layer mounted lazily", "snapshot", target, "layer", desc.Digest, "id", id)
	return nil
}

func (s *Snapshotter) mounted(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lazy[id] != nil
}

// mountLayer serves lf at snapshot id's directory.
func (s *Snapshotter) mountLayer(id string, lf *lazyfs.LayerFS) error {
	dir := s.fsDir(id)
	// A mount left by a shoal that died answers nothing: clear it first.
	if err := lazyfs.Unmount(dir); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("snapshotter: clearing a stale mount", "dir", dir, "err", err)
	}
	srv, err := lazyfs.Mount(dir, lf.Tree, lazyfs.MountOptions{Name: "shoal-layer:" + id, Log: s.log, Stats: s.stats, Cache: s.cache})
	if err != nil {
		return fmt.Errorf("mount layer at %s: %w", dir, err)
	}
	s.mu.Lock()
	s.lazy[id] = &lazyMount{layer: lf, server: srv, dir: dir}
	s.mu.Unlock()
	return nil
}

// unmountLazy unmounts snapshot id's layer, if it is a mounted lazy one.
func (s *Snapshotter) unmountLazy(id string) error {
	s.mu.Lock()
	m := s.lazy[id]
	delete(s.lazy, id)
	s.mu.Unlock()
	if m == nil {
		return nil
	}
	err := m.server.Unmount()
	if err != nil {
		// Busy: detach it, and let its last user finish.
		err = lazyfs.Unmount(m.dir)
	}
	m.layer.Close()
	return err
}

// ensureMounted mounts snapshot id's lazy layer if it is one and is not
// mounted: after a restart, or when mounting it at the start failed.
func (s *Snapshotter) ensureMounted(ctx context.Context, id string) error {
	if s.mounted(id) {
		return nil
	}
	data, err := os.ReadFile(s.layerFile(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // an ordinary snapshot
	} else if err != nil {
		return err
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal(data, &desc); err != nil {
		return fmt.Errorf("snapshot %s: %s: %w", id, s.layerFile(id), err)
	}
	_, err, _ = s.mounting.Do("id\x00"+id, func() (any, error) {
		if s.mounted(id) {
			return nil, nil
		}
		lf, err := lazyfs.OpenLayer(ctx, s.store, desc, s.timeout, s.stats)
		if err != nil {
			return nil, err
		}
		lf.SetReadTimeout(s.timeout)
		if err := s.mountLayer(id, lf); err != nil {
			lf.Close()
			return nil, err
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("lazy layer %s of snapshot %s: %w", desc.Digest, id, err)
	}
	return nil
}

// restore mounts the lazy layers committed before a restart.
func (s *Snapshotter) restore(ctx context.Context) {
	var ids map[string]string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		ids, err = storage.IDMap(ctx)
		return err
	})
	if errdefs.IsNotFound(err) {
		return // no snapshot yet
	}
	if err != nil {
		s.log.Error("snapshotter: listing snapshots to restore", "err", err)
		return
	}
	for id, key := range ids {
		if err := s.ensureMounted(ctx, id); err != nil {
			// Tried again when a container needs it.
			s.log.Error("snapshotter: restoring a lazy layer", "snapshot", key, "err", err)
		}
	}
}

// chownLike gives dir the owner of what st describes.
func chownLike(dir string, st os.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Lchown(dir, int(sys.Uid), int(sys.Gid))
}
