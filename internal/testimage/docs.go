package testimage

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// AddJSON adds v, as JSON, to store and returns its descriptor with its
// CID: a document of an image made by hand.
func AddJSON(tb testing.TB, store image.Store, mediaType string, v any) ocispec.Descriptor {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return AddBlob(tb, store, mediaType, data, digest.FromBytes(data))
}

// AddBlob adds data to store and returns a descriptor of it with digest
// d, which need not be data's.
func AddBlob(tb testing.TB, store image.Store, mediaType string, data []byte, d digest.Digest) ocispec.Descriptor {
	tb.Helper()
	c, err := store.Add(context.Background(), bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	return image.WithCID(ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, c)
}

// AddRoot adds the root blob of an image whose top document is top, and
// returns the image's CID.
func AddRoot(tb testing.TB, store image.Store, top ocispec.Descriptor) cid.Cid {
	tb.Helper()
	c, err := image.CIDOf(AddJSON(tb, store, "application/json", top))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
