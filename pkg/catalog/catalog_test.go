package catalog

import (
	"slices"
	"testing"
	"time"
)

// An image pinned again keeps where and when it first came, and every
// source after it once.
func TestMergeKeepsTheFirstSource(t *testing.T) {
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := Image{CID: "bafy1", Source: "oci:/src:v1", Created: first, Size: 10, Blobs: []string{"a"}}
	again := Image{CID: "bafy1", Source: "registry:127.0.0.1:5050/team/app:1", Created: first.Add(time.Hour), Size: 10, Blobs: []string{"a", "b"}}
	m := Merge(old, again)
	if m.Source != old.Source || !m.Created.Equal(first) || !slices.Equal(m.Also, []string{again.Source}) || !slices.Equal(m.Blobs, again.Blobs) {
		t.Fatalf("merged %+v", m)
	}
	if m2 := Merge(m, again); !slices.Equal(m2.Also, m.Also) {
		t.Errorf("the same source again: %v", m2.Also)
	}
	if m3 := Merge(m, Image{CID: "bafy1", Source: old.Source}); !slices.Equal(m3.Also, m.Also) || m3.Source != old.Source {
		t.Errorf("the first source again: %+v", m3)
	}
	if other := Merge(old, Image{CID: "bafy2", Source: "x"}); other.Source != "x" || other.Also != nil {
		t.Errorf("another image merged: %+v", other)
	}
}
