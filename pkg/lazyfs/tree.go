// Package lazyfs is the read-only filesystem of an image's merged layers,
// built from the layers' indexes alone and reading file bytes on demand.
package lazyfs

import (
	"archive/tar"
	"context"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ipfs/shoal/pkg/layerindex"
)

// Layer is one layer as the filesystem sees it: its entries in tar order,
// and a way to read a regular file's bytes.
type Layer interface {
	Entries() []layerindex.Entry
	ReadAt(ctx context.Context, e *layerindex.Entry, p []byte, off int64) (int, error)
}

// node is a file of the merged tree. Hardlinked names share one node.
type node struct {
	entry    layerindex.Entry
	layer    Layer // nil for directories no layer lists
	children map[string]*node
	links    int // names pointing at this node
}

func (n *node) isDir() bool { return n.entry.Type == tar.TypeDir }

// Tree is the merged root filesystem of a list of layers, bottom first,
// with OCI's layer semantics: later layers win, ".wh.NAME" deletes NAME
// from the layers below, and ".wh..wh..opq" hides everything below in its
// directory.
type Tree struct {
	root *node
	// Skipped counts entries that could not be placed: names escaping the
	// root, hardlinks to missing targets.
	Skipped int
	// overlay keeps whiteouts in overlayfs's form rather than applying
	// them: see Overlay.
	overlay bool
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Merge builds the tree of layers, bottom first.
func Merge(layers []Layer) *Tree {
	t := &Tree{root: implicitDir()}
	for _, l := range layers {
		t.apply(l)
	}
	return t
}

// Overlay builds the tree of one layer as overlayfs wants a lower
// directory: ".wh.NAME" becomes NAME, a character device 0/0, and
// ".wh..wh..opq" marks its directory opaque with the xattr
// trusted.overlay.opaque=y. overlayfs then applies the layer's deletions
// to the layers below it, as a snapshotter stacks them.
func Overlay(l Layer) *Tree {
	t := &Tree{root: implicitDir(), overlay: true}
	t.apply(l)
	return t
}

// overlayOpaque is the xattr by which overlayfs hides a lower layer's
// directory contents.
const overlayOpaque = "trusted.overlay.opaque"

func implicitDir() *node {
	return &node{
		entry:    layerindex.Entry{Type: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)},
		children: map[string]*node{},
		links:    1,
	}
}

// cleanName turns a tar name into a path relative to the root, or reports
// that it escapes the root.
func cleanName(name string) (string, bool) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "..") {
		// "/a/../../b" cleans to "/b": a name that climbs is refused
		// rather than reinterpreted.
		for _, part := range strings.Split(name, "/") {
			if part == ".." {
				return "", false
			}
		}
	}
	return strings.TrimPrefix(p, "/"), true
}

func (t *Tree) apply(l Layer) {
	entries := l.Entries()
	if t.overlay {
		t.applyOverlay(l, entries)
		return
	}
	// Whiteouts and opaque markers act on the layers below only, so they
	// go first, whatever their place in the tar.
	for i := range entries {
		name, ok := cleanName(entries[i].Name)
		if !ok {
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == opaqueMarker:
			if d := t.lookup(dir); d != nil && d.isDir() {
				d.children = map[string]*node{}
			}
		case strings.HasPrefix(base, whiteoutPrefix):
			if parent := t.lookup(dir); parent != nil && parent.isDir() {
				t.unlink(parent, strings.TrimPrefix(base, whiteoutPrefix))
			}
		}
	}
	t.place(l, entries, func(*layerindex.Entry) bool { return false })
}

// applyOverlay places entries with their whiteouts turned into overlayfs's.
func (t *Tree) applyOverlay(l Layer, entries []layerindex.Entry) {
	var opaque []string
	t.place(l, entries, func(e *layerindex.Entry) bool {
		dir, base := path.Split(e.Name)
		switch {
		case base == opaqueMarker:
			opaque = append(opaque, strings.TrimSuffix(dir, "/"))
			return false
		case strings.HasPrefix(base, whiteoutPrefix):
			*e = layerindex.Entry{
				Name:    dir + strings.TrimPrefix(base, whiteoutPrefix),
				Type:    tar.TypeChar,
				ModTime: e.ModTime,
			}
			return true
		}
		return false
	})
	// Last, so that a directory entry after its marker keeps the mark.
	for _, dir := range opaque {
		d := t.mkdirAll(dir)
		x := make(map[string]string, len(d.entry.Xattrs)+1)
		for k, v := range d.entry.Xattrs {
			x[k] = v
		}
		x[overlayOpaque] = "y"
		d.entry.Xattrs = x
	}
}

// place adds entries to the tree; keep turns a whiteout entry into one to
// place (rewriting it) instead of skipping it.
func (t *Tree) place(l Layer, entries []layerindex.Entry, keep func(e *layerindex.Entry) bool) {
	for i := range entries {
		e := entries[i]
		name, ok := cleanName(e.Name)
		if !ok {
			t.Skipped++
			continue
		}
		e.Name = name
		if strings.HasPrefix(path.Base(name), whiteoutPrefix) && !keep(&e) {
			continue
		}
		name = e.Name
		dir, base := path.Split(name)
		if name == "" { // the root itself
			if e.Type == tar.TypeDir {
				t.root.entry = e
				t.root.entry.Name = ""
			}
			continue
		}
		parent := t.mkdirAll(strings.TrimSuffix(dir, "/"))
		old := parent.children[base]
		switch {
		case e.Type == tar.TypeLink:
			target, ok := cleanName(e.Linkname)
			tn := t.lookup(target)
			if !ok || tn == nil || tn.isDir() {
				t.Skipped++
				continue
			}
			if old == tn {
				continue
			}
			t.unlink(parent, base)
			tn.links++
			parent.children[base] = tn
		case e.Type == tar.TypeDir && old != nil && old.isDir():
			old.entry, old.layer = e, l // a directory listed again keeps what is in it
		default:
			t.unlink(parent, base)
			n := &node{entry: e, layer: l, links: 1}
			if e.Type == tar.TypeDir {
				n.children = map[string]*node{}
			}
			parent.children[base] = n
		}
	}
}

// lookup finds the node at a clean relative path, or nil.
func (t *Tree) lookup(p string) *node {
	n := t.root
	if p == "" {
		return n
	}
	for _, part := range strings.Split(p, "/") {
		if !n.isDir() {
			return nil
		}
		if n = n.children[part]; n == nil {
			return nil
		}
	}
	return n
}

// mkdirAll returns the directory at p, making the missing ones (as tar
// streams that omit parents expect) and replacing anything else in the way.
func (t *Tree) mkdirAll(p string) *node {
	n := t.root
	if p == "" {
		return n
	}
	for _, part := range strings.Split(p, "/") {
		c := n.children[part]
		if c == nil || !c.isDir() {
			t.unlink(n, part)
			c = implicitDir()
			n.children[part] = c
		}
		n = c
	}
	return n
}

func (t *Tree) unlink(parent *node, name string) {
	if old := parent.children[name]; old != nil {
		old.links--
		delete(parent.children, name)
	}
}

// Walk visits every name in the tree in lexical order, parents first.
func (t *Tree) Walk(f func(name string, e *layerindex.Entry, links int)) {
	var walk func(prefix string, n *node)
	walk = func(prefix string, n *node) {
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			c := n.children[name]
			p := path.Join(prefix, name)
			f(p, &c.entry, c.links)
			if c.isDir() {
				walk(p, c)
			}
		}
	}
	f("", &t.root.entry, 1)
	walk("", t.root)
}

// Usage is the bytes of the tree's regular files and its number of
// inodes, as a snapshot's usage counts them.
func (t *Tree) Usage() (size, inodes int64) {
	seen := map[*layerindex.Entry]bool{}
	t.Walk(func(_ string, e *layerindex.Entry, _ int) {
		if seen[e] {
			return // another name of a hardlinked file
		}
		seen[e] = true
		inodes++
		if e.IsReg() {
			size += e.Size
		}
	})
	return size, inodes
}
