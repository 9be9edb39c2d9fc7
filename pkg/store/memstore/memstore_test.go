package memstore_test

import (
	"testing"

	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
	"github.com/shoal-ipfs/shoal/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) storetest.Store { return memstore.New() })
}
