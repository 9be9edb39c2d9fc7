// Package buildinfo says which shoal is running: its version and commit
// from the build's own stamp, the Go that built it, and how it hashes on
// this CPU.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/shoal-ipfs/shoal/internal/sha256x"
)

// Info describes the running binary.
type Info struct {
	Version string // the module's version, "(devel)" for a build from a checkout
	Commit  string // the VCS revision, "unknown" without a stamp
	// Modified says the checkout had changes not committed.
	Modified  bool
	GoVersion string
	// Hashing is the hashing path this CPU takes, in words.
	Hashing string
	// HashingPath is the same as a short label: "avx512+sha-ni",
	// "avx512", "sha-ni" or "generic".
	HashingPath string
}

// Read returns the running binary's Info.
func Read() Info {
	i := Info{Version: "(devel)", Commit: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			i.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	switch many, stream := sha256x.Accelerated(), sha256x.StreamAccelerated(); {
	case many && stream:
		i.Hashing, i.HashingPath = "AVX-512, sixteen chunks at once; SHA extensions for a blob and its chunks in one pass", "avx512+sha-ni"
	case many:
		i.Hashing, i.HashingPath = "AVX-512, sixteen chunks at once", "avx512"
	case stream:
		i.Hashing, i.HashingPath = "SHA extensions, a blob and its chunks in one pass", "sha-ni"
	default:
		i.Hashing, i.HashingPath = "one chunk at a time (crypto/sha256)", "generic"
	}
	return i
}
