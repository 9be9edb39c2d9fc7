package lazyfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/layerindex"
)

// memLayer is a layer of entries whose files hold their own names.
type memLayer []layerindex.Entry

func (l memLayer) Entries() []layerindex.Entry { return l }
func (l memLayer) ReadAt(_ context.Context, e *layerindex.Entry, p []byte, off int64) (int, error) {
	n := copy(p, e.Name[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func reg(name string) layerindex.Entry {
	return layerindex.Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Size: int64(len(name))}
}
func dir(name string) layerindex.Entry {
	return layerindex.Entry{Name: name, Type: tar.TypeDir, Mode: 0o755}
}
func link(name, target string) layerindex.Entry {
	return layerindex.Entry{Name: name, Type: tar.TypeLink, Linkname: target}
}

func listing(t *Tree) string {
	var b strings.Builder
	t.Walk(func(name string, e *layerindex.Entry, links int) {
		if name == "" {
			return
		}
		fmt.Fprintf(&b, "%s %c %d|", name, e.Type, links)
	})
	return b.String()
}

func TestMergeFollowsOCILayerRules(t *testing.T) {
	base := memLayer{
		dir("etc/"), reg("etc/passwd"), reg("etc/gone"), dir("var/"), dir("var/cache/"), reg("var/cache/a"), reg("var/cache/b"),
		reg("usr/bin/tool"), link("usr/bin/tool2", "usr/bin/tool"), reg("opt/file"),
	}
	upper := memLayer{
		reg("etc/.wh.gone"),           // deletes a lower file
		reg("var/cache/.wh..wh..opq"), // hides all of the lower directory
		reg("var/cache/c"),            // but keeps what this layer adds
		{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o600, Size: 6}, // overrides
		reg("opt"),                               // a file replaces a directory
		link("usr/bin/tool3", "usr/bin/tool"),    // a third name for a lower file
		reg("../escape"), reg("a/../../escape2"), // refused
		link("usr/bin/dangling", "no/such/file"), // refused
		reg("etc/.wh.never-existed"),
	}
	tr := Merge([]Layer{base, upper})
	got := listing(tr)
	want := "etc 5 1|etc/passwd 0 1|opt 0 1|usr 5 1|usr/bin 5 1|usr/bin/tool 0 3|usr/bin/tool2 0 3|usr/bin/tool3 0 3|var 5 1|var/cache 5 1|var/cache/c 0 1|"
	if got != want {
		t.Errorf("merged tree\n got %s\nwant %s", got, want)
	}
	if tr.Skipped != 3 {
		t.Errorf("skipped %d entries, want 3", tr.Skipped)
	}
	if n := tr.lookup("etc/passwd"); n.entry.Mode != 0o600 || n.layer == nil {
		t.Errorf("override kept %+v", n.entry)
	}
	if tr.lookup("usr/bin/tool") != tr.lookup("usr/bin/tool3") {
		t.Error("hardlinks across layers do not share a node")
	}
}

func TestWhiteoutOfAHardlinkKeepsTheOtherNames(t *testing.T) {
	base := memLayer{reg("a"), link("b", "a")}
	upper := memLayer{reg(".wh.a")}
	tr := Merge([]Layer{base, upper})
	if got := listing(tr); got != "b 0 1|" {
		t.Errorf("got %s", got)
	}
}

func TestDuplicateEntriesTheLaterWins(t *testing.T) {
	first := reg("etc/motd")
	second := reg("etc/motd")
	second.Mode, second.UID = 0o600, 5
	tr := Merge([]Layer{memLayer{first, second}})
	if n := tr.lookup("etc/motd"); n.entry.Mode != 0o600 || n.entry.UID != 5 {
		t.Errorf("kept %+v", n.entry)
	}
	if got := listing(tr); got != "etc 5 1|etc/motd 0 1|" {
		t.Errorf("got %s", got)
	}
}

func TestOverlayKeepsWhiteoutsForOverlayfs(t *testing.T) {
	upper := memLayer{
		reg("etc/.wh.gone"),
		reg("var/cache/.wh..wh..opq"),
		dir("var/cache/"), // listed after its marker: keeps the mark
		reg("var/cache/c"),
		reg("../escape"),
	}
	tr := Overlay(upper)
	if got, want := listing(tr), "etc 5 1|etc/gone 3 1|var 5 1|var/cache 5 1|var/cache/c 0 1|"; got != want {
		t.Errorf("overlay tree\n got %s\nwant %s", got, want)
	}
	if n := tr.lookup("etc/gone"); n.entry.Devmajor != 0 || n.entry.Devminor != 0 || n.entry.Mode != 0 {
		t.Errorf("whiteout is %+v, want a character device 0/0", n.entry)
	}
	if v := tr.lookup("var/cache").entry.Xattrs[overlayOpaque]; v != "y" {
		t.Errorf("opaque directory has %s=%q", overlayOpaque, v)
	}
	if tr.lookup("var").entry.Xattrs[overlayOpaque] != "" {
		t.Error("the opaque mark spread to the parent")
	}
	if tr.Skipped != 1 {
		t.Errorf("skipped %d, want 1", tr.Skipped)
	}
}
