// Package catalog is the record a node keeps of each image it has pinned,
// shared by the node that stores it, the conversions that produce it and
// the daemon API that carries it.
package catalog

import (
	"errors"
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
}

// ErrNotFound means no image with that root is pinned here.
var ErrNotFound = errors.New("not found")
