package bench

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkBigLayer pushes an image of one big gzip layer (4 GiB of tar,
// or SHOAL_BENCH_BIG bytes) into a new store, and pulls it from one peer,
// for a layer of random bytes and one of text. Besides time it reports
// the peak memory of the command and of the serving daemon, and what the
// store holds: memory stays flat however big a layer is (no whole-blob
// buffers), and a store keeps one copy of it.
func BenchmarkBigLayer(b *testing.B) {
	requireTools(b)
	size := int64(4 << 30)
	if v := os.Getenv("SHOAL_BENCH_BIG"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("SHOAL_BENCH_BIG=%q: %v", v, err)
		}
		size = n
	}
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			layout, blobBytes := bigLayout(b, kind, size)
			b.Run("push", func(b *testing.B) {
				intoNewStores(b, blobBytes, func() []string {
					return []string{"push", "oci:" + layout + ":big"}
				})
			})
			b.Run("pull", func(b *testing.B) {
				origin := shoalHome(b, "kubo", "flatfs")
				d := startShoalDaemon(b, origin, nil)
				root := lastLine(output(b, origin, shoalBin, "push", "oci:"+layout+":big"))
				intoNewStores(b, blobBytes, func() []string {
					return []string{"pull", root, "--peer", d.addr, "--to", "oci:" + filepath.Join(scratchDir(b), "out") + ":big"}
				})
				b.ReportMetric(peakRSS(d.pid), "origin-peak-MiB")
			})
		})
	}
}

// intoNewStores runs shoal with the arguments args gives, into a new
// store each iteration, and reports the command's peak memory and what
// the last store holds.
func intoNewStores(b *testing.B, bytes int64, args func() []string) {
	b.SetBytes(bytes)
	var rss float64
	var home string
	for b.Loop() {
		b.StopTimer()
		env := shoalHome(b, "kubo", "flatfs")
		home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
		argv := args()
		b.StartTimer()
		rss = max(rss, run(b, env, shoalBin, argv...))
	}
	reportStore(b, home, rss)
}

// bigLayout writes an OCI layout (tag "big") of one gzip layer holding
// files of 64 MiB, size bytes of them, of random bytes or of text, and
// returns it with the size of its blobs.
func bigLayout(b *testing.B, kind string, size int64) (string, int64) {
	b.Helper()
	dir := scratchDir(b)
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	layer, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		b.Fatal(err)
	}
	compressed, uncompressed := sha256.New(), sha256.New()
	counted := &countWriter{w: io.MultiWriter(layer, compressed)}
	bw := bufio.NewWriterSize(counted, 1<<20)
	zw, _ := kgzip.NewWriterLevel(bw, kgzip.BestSpeed)
	tw := tar.NewWriter(io.MultiWriter(zw, uncompressed))
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, 1<<20)
	const fileSize = 64 << 20
	for i := int64(0); i*fileSize < size; i++ {
		n := min(fileSize, size-i*fileSize)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/%04d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: n, ModTime: time.Unix(0, 0)}); err != nil {
			b.Fatal(err)
		}
		for left := n; left > 0; left -= int64(len(chunk)) {
			fill(rng, chunk, kind)
			if _, err := tw.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	layer.Close()
	layerDigest := digest.NewDigestFromBytes(digest.SHA256, compressed.Sum(nil))
	if err := os.Rename(layer.Name(), filepath.Join(blobs, layerDigest.Encoded())); err != nil {
		b.Fatal(err)
	}
	config := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.NewDigestFromBytes(digest.SHA256, uncompressed.Sum(nil))}},
	}
	configDesc := writeJSONBlob(b, blobs, ocispec.MediaTypeImageConfig, config)
	manifest := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layerDigest, Size: counted.n}},
	}
	manifest.SchemaVersion = 2
	manifestDesc := writeJSONBlob(b, blobs, ocispec.MediaTypeImageManifest, manifest)
	manifestDesc.Annotations = map[string]string{ocispec.AnnotationRefName: "big"}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{manifestDesc}}
	index.SchemaVersion = 2
	writeJSON(b, filepath.Join(dir, "index.json"), index)
	writeJSON(b, filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	b.Logf("%s layer: %d bytes of tar in %d bytes of gzip, written in %v", kind, size, counted.n, time.Since(start).Round(time.Millisecond))
	return dir, counted.n + configDesc.Size + manifestDesc.Size
}

// fill fills p with random bytes, or with lines of random words.
func fill(rng *rand.Rand, p []byte, kind string) {
	if kind == "random" {
		for i := 0; i+8 <= len(p); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				p[i+k] = byte(v >> (8 * k))
			}
		}
		return
	}
	words := []string{"layer ", "image ", "block ", "peer ", "shoal ", "pull ", "push\n", "index ", "mount ", "tar\n"}
	for i := 0; i < len(p); {
		i += copy(p[i:], words[rng.IntN(len(words))])
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeJSONBlob(b *testing.B, blobs, mediaType string, v any) ocispec.Descriptor {
	b.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644); err != nil {
		b.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func writeJSON(b *testing.B, path string, v any) {
	b.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}
