package testbed

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testenv"
)

// ForTest builds a testbed of n hosts for tb, bounded to an hour, needing
// root and tc as testenv does (failing in CI, skipping elsewhere). It is
// removed when tb ends, after the cleanups registered later: so after the
// processes a test runs on it have stopped.
func ForTest(tb testing.TB, n int, link Link) *Testbed {
	tb.Helper()
	testenv.Root(tb)
	testenv.Tool(tb, "tc")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	t, err := New(ctx, n, link)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Error(err)
		}
		cancel()
	})
	return t
}
