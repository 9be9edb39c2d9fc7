// Package catalog is the record a node keeps of each image it has pinned,
// shared by the node that stores it, the conversions that produce it and
// the daemon API that carries it.
package catalog

import (
	"slices"
	"time"
)

// Image is the record of a pinned image.
type Image struct {
	CID       string    // root CID
	Source    string    // where it came from: a transport reference, or ipfs://CID for a pull
	Platforms []string  // os/arch[/variant] of its manifests
	Size      int64     // bytes of the OCI image's blobs, each counted once; attachments (layer indexes) are pinned, not counted
	Created   time.Time // when it was pinned here
	// Blobs are the CIDs of every blob in the image, the root included;
	// each is pinned recursively for as long as some image names it.
	Blobs []string
	// Also are the other sources the same image (the same root) was
	// pinned from since, oldest first; Source stays where it first came
	// from.
	Also []string `json:",omitempty"`
}

// Merge is the record of an image pinned again: where and when it first
// came stay, the new source joins Also once, and what describes the image
// (its blobs, platforms, size) is the new record's.
func Merge(old, img Image) Image {
	if old.CID != img.CID || old.Source == "" {
		return img
	}
	merged := img
	merged.Source, merged.Created = old.Source, old.Created
	merged.Also = append([]string{}, old.Also...)
	for _, src := range append([]string{img.Source}, img.Also...) {
		if src != "" && src != old.Source && !slices.Contains(merged.Also, src) {
			merged.Also = append(merged.Also, src)
		}
	}
	if len(merged.Also) == 0 {
		merged.Also = nil
	}
	return merged
}
