package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/shoal-ipfs/shoal/internal/buildinfo"
	"github.com/spf13/cobra"
)

// versionText says which shoal this is: its version and commit from the
// build's own stamp, the Go that built it, and how it hashes here.
func versionText() string {
	info := buildinfo.Read()
	commit := info.Commit
	if info.Modified {
		commit += " (modified)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "shoal %s\n", info.Version)
	fmt.Fprintf(&b, "commit:  %s\n", commit)
	fmt.Fprintf(&b, "go:      %s %s/%s\n", info.GoVersion, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "hashing: %s\n", info.Hashing)
	return b.String()
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use: "version",
		Example: `  shoal version
  shoal --version`,
		Short: "Print shoal's version, commit, Go version and hashing path",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), versionText())
			return err
		},
	}
}
