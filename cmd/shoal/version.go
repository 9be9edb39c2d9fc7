package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/shoal-ipfs/shoal/internal/sha256x"
	"github.com/spf13/cobra"
)

// versionText says which shoal this is: its version and commit from the
// build's own stamp, the Go that built it, and how it hashes here.
func versionText() string {
	version, commit := "(devel)", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			version = info.Main.Version
		}
		var modified bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified {
			commit += " (modified)"
		}
	}
	hashing := "one chunk at a time (crypto/sha256)"
	switch {
	case sha256x.Accelerated() && sha256x.StreamAccelerated():
		hashing = "AVX-512, sixteen chunks at once; SHA extensions for a blob and its chunks in one pass"
	case sha256x.Accelerated():
		hashing = "AVX-512, sixteen chunks at once"
	case sha256x.StreamAccelerated():
		hashing = "SHA extensions, a blob and its chunks in one pass"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "shoal %s\n", version)
	fmt.Fprintf(&b, "commit:  %s\n", commit)
	fmt.Fprintf(&b, "go:      %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "hashing: %s\n", hashing)
	return b.String()
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print shoal's version, commit, Go version and hashing path",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), versionText())
			return err
		},
	}
}
