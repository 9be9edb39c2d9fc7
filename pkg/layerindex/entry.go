package layerindex

import (
	"archive/tar"
	"time"
)

// Entry is one tar entry of a layer, with what a filesystem needs to show
// it and where its bytes are in the layer's uncompressed tar stream.
type Entry struct {
	Name     string            `json:"name"` // clean, relative: "etc/passwd"
	Type     byte              `json:"type"` // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Mode     int64             `json:"mode"` // permission bits with setuid, setgid and sticky
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Size     int64             `json:"size,omitempty"`
	ModTime  time.Time         `json:"mtime"`
	Linkname string            `json:"link,omitempty"` // symlink target, or the hardlinked entry's name
	Devmajor int64             `json:"devmajor,omitempty"`
	Devminor int64             `json:"devminor,omitempty"`
	Xattrs   map[string]string `json:"xattrs,omitempty"`
	// Offset is where the file's bytes start in the uncompressed stream.
	Offset int64 `json:"offset,omitempty"`
}

// IsDir, IsReg and the rest say what kind of entry e is.
func (e *Entry) IsDir() bool     { return e.Type == tar.TypeDir }
func (e *Entry) IsReg() bool     { return e.Type == tar.TypeReg }
func (e *Entry) IsSymlink() bool { return e.Type == tar.TypeSymlink }
func (e *Entry) IsHardlink() bool {
	return e.Type == tar.TypeLink
}
