package node_test

import (
	"testing"

	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/store/storetest"
)

// The embedded node does what package store says a store does.
func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		n := testnode.Offline(t, t.TempDir())
		t.Cleanup(func() { n.Close() })
		return n
	})
}
