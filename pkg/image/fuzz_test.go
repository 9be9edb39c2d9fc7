package image

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

func FuzzParseRoot(f *testing.F) {
	f.Add([]byte(`{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":10,"urls":["ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]}`))
	f.Add([]byte(`{"mediaType":"text/plain"}`))
	f.Add([]byte(`hello`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseRoot(data)
		if err != nil {
			return
		}
		if _, err := CIDOf(d); err != nil {
			t.Fatalf("accepted root without a CID: %v", err)
		}
		if !transport.IsIndex(d.MediaType) && !transport.IsManifest(d.MediaType) {
			t.Fatalf("accepted root of media type %q", d.MediaType)
		}
	})
}

func FuzzParseDocument(f *testing.F) {
	f.Add(ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[],"x-unknown":{"kept":true}}`))
	f.Add(ocispec.MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}`))
	f.Add(transport.MediaTypeDockerManifest, []byte(`{"schemaVersion":1}`))
	f.Fuzz(func(t *testing.T, mediaType string, data []byte) {
		doc, err := ParseDocument(mediaType, data)
		if err != nil {
			return
		}
		out, err := doc.Marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed document: %v", err)
		}
		again, err := ParseDocument(mediaType, out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if len(again.Manifests) != len(doc.Manifests) || len(again.Layers) != len(doc.Layers) {
			t.Fatal("round trip lost descriptors")
		}
	})
}

func FuzzParsePlatform(f *testing.F) {
	f.Add("linux/amd64")
	f.Add("linux/arm64/v8")
	f.Add("//")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePlatform(s)
		if err == nil && formatPlatform(p) != s {
			t.Fatalf("%q parsed as %q", s, formatPlatform(p))
		}
	})
}
