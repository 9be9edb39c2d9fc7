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
	size := sizeFromEnv(b, "SHOAL_BENCH_BIG", 4<<30)
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			layout, blobBytes := bigLayout(b, kind, size, 1)
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

// BenchmarkBigImage is BenchmarkBigLayer's work on an image of 3 GiB of
// tar in six layers (SHOAL_BENCH_BIG_IMAGE bytes), random and text layers
// in turn; and a lazy mount of it from a peer in a new node, reading one
// file of its last layer: memory and time stay those of what is read.
func BenchmarkBigImage(b *testing.B) {
	requireTools(b)
	size := sizeFromEnv(b, "SHOAL_BENCH_BIG_IMAGE", 3<<30)
	const layers = 6
	layout, blobBytes := bigLayout(b, "mixed", size, layers)
	b.Run("push", func(b *testing.B) {
		intoNewStores(b, blobBytes, func() []string {
			return []string{"push", "oci:" + layout + ":big"}
		})
	})
	origin := shoalHome(b, "kubo", "flatfs")
	d := startShoalDaemon(b, origin, nil)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+layout+":big"))
	b.Run("pull", func(b *testing.B) {
		intoNewStores(b, blobBytes, func() []string {
			return []string{"pull", root, "--peer", d.addr, "--to", "oci:" + filepath.Join(scratchDir(b), "out") + ":big"}
		})
		b.ReportMetric(peakRSS(d.pid), "origin-peak-MiB")
	})
	b.Run("mount-read-one-file", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("mounting needs root")
		}
		// The last layer's first file: the mount reads its span of the
		// layer and the index, none of the other 3 GiB.
		file := fmt.Sprintf("layer-%d/0000", layers-1)
		var rss float64
		var home string
		b.SetBytes(bigFileSize)
		for b.Loop() {
			b.StopTimer()
			env := shoalHome(b, "kubo", "flatfs")
			home = strings.TrimPrefix(env[0], "SHOAL_HOME=")
			mnt := b.TempDir()
			b.StartTimer()
			_, unmount := startMount(b, env, nil, root, mnt, d.addr)
			data, err := os.ReadFile(filepath.Join(mnt, file))
			if err != nil || len(data) != bigFileSize {
				b.Fatalf("read %s: %d bytes, %v", file, len(data), err)
			}
			b.StopTimer()
			rss = max(rss, unmount())
			b.StartTimer()
		}
		reportStore(b, home, rss)
	})
}

// sizeFromEnv is the size in bytes the environment variable name gives,
// else def.
func sizeFromEnv(b *testing.B, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
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

// bigLayout writes an OCI layout (tag "big") of size bytes of tar in
// layers gzip layers, holding files of 64 MiB of random bytes or of text
// ("mixed": the layers alternate, random first), and returns it with the
// size of its blobs.
func bigLayout(b *testing.B, kind string, size int64, layers int) (string, int64) {
	b.Helper()
	dir := scratchDir(b)
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	var total int64
	per := size / int64(layers)
	for l := range layers {
		layerKind := kind
		if kind == "mixed" {
			layerKind = [2]string{"random", "text"}[l%2]
		}
		n := per
		if l == layers-1 {
			n = size - per*int64(layers-1)
		}
		desc, diffID := bigLayer(b, blobs, rng, layerKind, l, n)
		descs, diffIDs = append(descs, desc), append(diffIDs, diffID)
		total += desc.Size
	}
	config := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	configDesc := writeJSONBlob(b, blobs, ocispec.MediaTypeImageConfig, config)
	manifest := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: configDesc, Layers: descs}
	manifest.SchemaVersion = 2
	manifestDesc := writeJSONBlob(b, blobs, ocispec.MediaTypeImageManifest, manifest)
	manifestDesc.Annotations = map[string]string{ocispec.AnnotationRefName: "big"}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{manifestDesc}}
	index.SchemaVersion = 2
	writeJSON(b, filepath.Join(dir, "index.json"), index)
	writeJSON(b, filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	b.Logf("%s image: %d bytes of tar in %d layers, %d bytes of gzip, written in %v", kind, size, layers, total, time.Since(start).Round(time.Millisecond))
	return dir, total + configDesc.Size + manifestDesc.Size
}

// bigLayer writes one gzip layer of size bytes of tar into blobs, its
// files named layer-L/NNNN, and returns its descriptor and diff ID.
func bigLayer(b *testing.B, blobs string, rng *rand.Rand, kind string, l int, size int64) (ocispec.Descriptor, digest.Digest) {
	b.Helper()
	layer, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		b.Fatal(err)
	}
	compressed, uncompressed := sha256.New(), sha256.New()
	counted := &countWriter{w: io.MultiWriter(layer, compressed)}
	bw := bufio.NewWriterSize(counted, 1<<20)
	zw, _ := kgzip.NewWriterLevel(bw, kgzip.BestSpeed)
	tw := tar.NewWriter(io.MultiWriter(zw, uncompressed))
	chunk := make([]byte, 1<<20)
	for i := int64(0); i*bigFileSize < size; i++ {
		n := min(bigFileSize, size-i*bigFileSize)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("layer-%d/%04d", l, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: n, ModTime: time.Unix(0, 0)}); err != nil {
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
	d := digest.NewDigestFromBytes(digest.SHA256, compressed.Sum(nil))
	if err := os.Rename(layer.Name(), filepath.Join(blobs, d.Encoded())); err != nil {
		b.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: counted.n},
		digest.NewDigestFromBytes(digest.SHA256, uncompressed.Sum(nil))
}

// bigFileSize is the size of the files of a big layer.
const bigFileSize = 64 << 20

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
