package lazyfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// inode is a file of the mounted tree; hardlinked names share one.
type inode struct {
	fs.Inode
	n    *node
	ino  uint64
	nlnk uint32
	m    *mount

	mu     sync.Mutex
	copier *cacheWriter // the file's copy into the cache, while one is made
	copied bool         // no copy to make (any more)
}

// mount is what a mount's inodes share.
type mount struct {
	log   *slog.Logger
	stats *Stats
	rec   *Recorder
	cache *FileCache // nil: none
}

var (
	_ fs.NodeGetattrer   = (*inode)(nil)
	_ fs.NodeOpener      = (*inode)(nil)
	_ fs.NodeReader      = (*inode)(nil)
	_ fs.NodeReadlinker  = (*inode)(nil)
	_ fs.NodeGetxattrer  = (*inode)(nil)
	_ fs.NodeListxattrer = (*inode)(nil)
	_ fs.NodeOnAdder     = (*inode)(nil)
	_ fs.NodeStatfser    = (*inode)(nil)
)

// typeBits are the S_IF* bits of a tar type.
func typeBits(t byte) uint32 {
	switch t {
	case tar.TypeDir:
		return syscall.S_IFDIR
	case tar.TypeSymlink:
		return syscall.S_IFLNK
	case tar.TypeChar:
		return syscall.S_IFCHR
	case tar.TypeBlock:
		return syscall.S_IFBLK
	case tar.TypeFifo:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

// OnAdd builds the whole tree below the root when it is mounted: the
// metadata is all in memory already, and content is immutable.
func (i *inode) OnAdd(ctx context.Context) {
	if i.n != nil && i.ino == 1 {
		made := map[*node]*fs.Inode{i.n: &i.Inode}
		next := uint64(2)
		i.build(ctx, made, &next)
	}
}

func (i *inode) build(ctx context.Context, made map[*node]*fs.Inode, next *uint64) {
	for name, c := range i.n.children {
		child, ok := made[c]
		if !ok {
			ci := &inode{n: c, ino: *next, m: i.m}
			*next++
			if c.isDir() {
				ci.nlnk = 2
				for _, g := range c.children {
					if g.isDir() {
						ci.nlnk++
					}
				}
			} else {
				ci.nlnk = uint32(max(c.links, 1))
			}
			child = i.NewPersistentInode(ctx, ci, fs.StableAttr{Mode: typeBits(c.entry.Type), Ino: ci.ino})
			made[c] = child
			if c.isDir() {
				ci.build(ctx, made, next)
			}
		}
		i.AddChild(name, child, false)
	}
}

func (i *inode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := &i.n.entry
	a := &out.Attr
	a.Ino = i.ino
	a.Mode = typeBits(e.Type) | uint32(e.Mode&0o7777)
	a.Nlink = i.nlnk
	if a.Nlink == 0 {
		a.Nlink = 1
	}
	a.Uid, a.Gid = uint32(e.UID), uint32(e.GID)
	switch {
	case e.IsReg():
		a.Size = uint64(e.Size)
	case e.IsSymlink():
		a.Size = uint64(len(e.Linkname))
	case e.IsDir():
		a.Size = 4096
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Rdev = uint32(unix.Mkdev(uint32(e.Devmajor), uint32(e.Devminor)))
	t := e.ModTime
	a.SetTimes(&t, &t, &t)
	out.SetTimeout(time.Hour)
	return 0
}

// Statfs reports the limits overlayfs checks when it stacks the mount as
// a lower layer: with a zero name length, every lookup fails.
func (i *inode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.NameLen = 255
	out.Bsize = 4096
	out.Frsize = 4096
	return 0
}

func (i *inode) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if key := i.cacheKey(); key != "" {
		if f, ok := i.m.cache.open(key, i.n.entry.Size); ok {
			i.m.stats.CacheOpens.Add(1)
			return &cachedFile{f: f}, 0, 0
		}
	}
	// Content never changes: the kernel may keep what it has read.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// cachedFile is an open file served from its complete copy in the file
// cache: by the kernel where it passes reads through, else by Read.
type cachedFile struct{ f *os.File }

var (
	_ fs.FilePassthroughFder = (*cachedFile)(nil)
	_ fs.FileReleaser        = (*cachedFile)(nil)
)

func (c *cachedFile) PassthroughFd() (int, bool) { return int(c.f.Fd()), true }

func (c *cachedFile) Release(context.Context) syscall.Errno {
	c.f.Close()
	return 0
}

// cacheKey names the file's copy in the cache; "" when it has none to
// have (no cache, too small, or a layer that does not name its content).
func (i *inode) cacheKey() string {
	l, ok := i.n.layer.(interface{ contentID() string })
	if i.m.cache == nil || !ok || !i.n.entry.IsReg() || i.n.entry.Size < i.m.cache.MinSize {
		return ""
	}
	return cacheKey(l.contentID(), i.n.entry.Name, i.n.entry.Size)
}

func (i *inode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !i.n.entry.IsReg() || i.n.layer == nil {
		return nil, syscall.EISDIR
	}
	i.m.stats.Reads.Add(1)
	var n int
	var err error
	if c, ok := fh.(*cachedFile); ok {
		n, err = c.f.ReadAt(dest, off)
	} else {
		n, err = i.n.layer.ReadAt(ctx, &i.n.entry, dest, off)
		if n > 0 {
			i.copyOut(dest[:n], off)
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		i.m.stats.ReadErrors.Add(1)
		i.m.log.Warn("lazyfs: read failed", "path", i.n.entry.Name, "offset", off, "err", err)
		return nil, syscall.EIO
	}
	i.m.stats.ReadBytes.Add(int64(n))
	i.m.rec.note(i.n.entry.Name, off, int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

// copyOut adds bytes just read to the file's copy in the cache, which
// takes its place for later opens once every byte is in.
func (i *inode) copyOut(p []byte, off int64) {
	i.mu.Lock()
	if i.copier == nil && !i.copied {
		if key := i.cacheKey(); key != "" {
			i.copier = i.m.cache.writer(key, i.n.entry.Size)
		}
		i.copied = i.copier == nil
	}
	w := i.copier
	i.mu.Unlock()
	if w != nil && w.write(p, off) {
		i.m.stats.CachedFiles.Add(1)
		i.mu.Lock()
		i.copier, i.copied = nil, true
		i.mu.Unlock()
	}
}

func (i *inode) Readlink(context.Context) ([]byte, syscall.Errno) {
	if !i.n.entry.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return []byte(i.n.entry.Linkname), 0
}

func (i *inode) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := i.n.entry.Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (i *inode) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	var b strings.Builder
	for k := range i.n.entry.Xattrs {
		b.WriteString(k)
		b.WriteByte(0)
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

// MountOptions change a mount.
type MountOptions struct {
	// Name shows in /proc/mounts as the source, e.g. "shoal:CID".
	Name string
	Log  *slog.Logger
	// Stats counts the mount's reads; a mount of an Image passes its own.
	Stats *Stats
	// Record, if set, notes every read, for a prefetch list.
	Record *Recorder
	// Cache, if set, keeps copies of the files read whole and serves
	// them from there (see FileCache). The mount does not close it.
	Cache *FileCache
}

// Mount serves t read-only at dir until Unmount. As root it mounts
// directly and lets every user read (as a container's root filesystem
// needs); otherwise it goes through fusermount.
func Mount(dir string, t *Tree, opts MountOptions) (*fuse.Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Stats == nil {
		opts.Stats = &Stats{}
	}
	hour := time.Hour
	root := &inode{n: t.root, ino: 1, nlnk: 2, m: &mount{log: opts.Log, stats: opts.Stats, rec: opts.Record, cache: opts.Cache}}
	asRoot := os.Geteuid() == 0
	return fs.Mount(dir, root, &fs.Options{
		EntryTimeout:    &hour,
		AttrTimeout:     &hour,
		NegativeTimeout: &hour,
		MountOptions: fuse.MountOptions{
			FsName:            opts.Name,
			Name:              "shoal",
			DirectMountStrict: asRoot,
			AllowOther:        asRoot,
			Options:           []string{"ro", "default_permissions"},
			MaxReadAhead:      1 << 20,
			MaxWrite:          1 << 20, // also lets the kernel ask for reads this large
		},
	})
}

// Unmount detaches the filesystem at dir, even one whose server was
// killed and left behind.
func Unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.ENOTCONN) {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if errors.Is(err, syscall.EPERM) {
		// Not root: fusermount may undo what it mounted.
		for _, tool := range []string{"fusermount3", "fusermount"} {
			if out, ferr := exec.Command(tool, "-u", dir).CombinedOutput(); ferr == nil {
				return nil
			} else if !errors.Is(ferr, exec.ErrNotFound) {
				return fmt.Errorf("%s -u %s: %v: %s", tool, dir, ferr, out)
			}
		}
	}
	return err
}
