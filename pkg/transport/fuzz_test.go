package transport

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func FuzzParseLayoutIndex(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../../etc/passwd","size":-1}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseLayoutIndex(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, d := range idx.Manifests {
			p, err := blobPath("/layout", d.Digest)
			if err != nil {
				t.Fatalf("accepted descriptor has a bad digest: %v", err)
			}
			if !strings.HasPrefix(p, "/layout/blobs/") || strings.Contains(p, "..") {
				t.Fatalf("blob path %q leaves the layout", p)
			}
		}
		_, _ = SelectManifest(idx, "v1")
		_, _ = SelectManifest(idx, "")
	})
}

func FuzzReferences(f *testing.F) {
	for _, s := range []string{"oci:/tmp/x:v1", "oci:dir", "oci-archive:/a/b.tar:tag", "docker-archive:x.tar", "docker://", "docker:x", "ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", ":", "oci:", "foo:bar"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		path, tag := splitPathTag(ref)
		if strings.Contains(tag, "/") {
			t.Fatalf("tag %q of %q holds a slash", tag, ref)
		}
		if tag != "" && path+":"+tag != ref {
			t.Fatalf("split %q into %q and %q", ref, path, tag)
		}
		_, _ = ParseCID(ref)
		// Only transports that touch nothing but the given path are opened.
		if strings.HasPrefix(ref, "docker:") {
			return
		}
		if src, err := OpenSource(context.Background(), "oci:"+t.TempDir()+"/"+strings.ReplaceAll(ref, "\x00", ""), SourceOptions{}); err == nil {
			src.Close()
		}
	})
}

func FuzzExtractLayoutTar(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "oci-layout", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("{}"))
	_ = tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Typeflag: tar.TypeReg})
	_ = tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := parent + "/layout"
		_ = ExtractLayoutTar(bytes.NewReader(data), dir)
		// Nothing may appear beside the layout directory.
		entries, err := readDirNames(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e != "layout" {
				t.Fatalf("extraction wrote %q outside the layout", e)
			}
		}
	})
}

func FuzzVerifier(f *testing.F) {
	f.Add([]byte("hello"), int64(5))
	f.Add([]byte("hello"), int64(4))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		d := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: size}
		err := VerifyReader(bytes.NewReader(data), d)
		if (err == nil) != (size == int64(len(data))) {
			t.Fatalf("size %d of %d bytes: err %v", size, len(data), err)
		}
	})
}

func readDirNames(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}
