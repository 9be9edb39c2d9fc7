// Command mkimage writes a small multi-platform OCI image layout, for the
// demo and benchmarks on a machine with no image at hand.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/shoal-ipfs/shoal/internal/testimage"
)

func main() {
	seed := flag.Int64("seed", 1, "seed of the random layers")
	tag := flag.String("tag", "demo", "tag in the layout")
	mib := flag.Int64("mib", 8, "approximate size of the biggest layer in MiB")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, "usage: mkimage [flags] DIR") }
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	idx, err := testimage.Index(*seed, *mib<<20, 1<<20, 64<<10)
	if err == nil {
		err = testimage.WriteLayout(flag.Arg(0), *tag, idx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
