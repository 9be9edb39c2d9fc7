package image_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/internal/testimage"
	"github.com/shoal-ipfs/shoal/internal/testnode"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/layerindex"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
	"github.com/shoal-ipfs/shoal/pkg/transport"
)

// newNode starts a node on loopback with its own home, connected to peers
// over TCP.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func pushIndex(t *testing.T, ctx context.Context, n *node.Node, seed int64) image.Result {
	t.Helper()
	return testimage.Push(ctx, t, n, testimage.IndexLayout(t, seed, 3<<20, 1<<20, 70<<10), image.PushOptions{})
}

func pullTo(ctx context.Context, n *node.Node, root cid.Cid, dir string, timeout time.Duration) (image.Result, error) {
	dst, err := transport.OpenDestination("oci:" + dir + ":pulled")
	if err != nil {
		return image.Result{}, err
	}
	defer dst.Close()
	return image.Pull(ctx, n, root, dst, image.PullOptions{Timeout: timeout})
}

func TestPushPullThreeNodes(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)
	c := testnode.Online(t, "/tcp/", a, b)

	res := pushIndex(t, ctx, a, 1)
	if got := res.Image.Platforms; len(got) != 2 || got[0] != "linux/amd64" || got[1] != "linux/arm64/v8" {
		t.Fatalf("platforms %v", got)
	}
	// Same image again: same CID, nothing new stored.
	before := testnode.Blocks(t, a)
	again := pushIndex(t, ctx, a, 1)
	if again.Root != res.Root {
		t.Fatalf("second push gave %s, first %s", again.Root, res.Root)
	}
	if after := testnode.Blocks(t, a); after != before {
		t.Fatalf("second push stored %d new blocks", after-before)
	}

	tree, err := image.ReadTree(ctx, a, res.Root, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node.Node{b, c} {
		// b writes the image as registries serve it; c as it is stored.
		ipfsURLs := n == c
		dir := t.TempDir()
		dst, err := transport.OpenDestination("oci:" + dir + ":pulled")
		if err != nil {
			t.Fatal(err)
		}
		got, err := image.Pull(ctx, n, res.Root, dst, image.PullOptions{Timeout: 30 * time.Second, IPFSURLs: ipfsURLs})
		dst.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := tree.Plain.Digest
		if ipfsURLs {
			want = res.Descriptor.Digest
		}
		if got.Descriptor.Digest != want {
			t.Fatalf("pulled %s (ipfs urls: %v), want %s", got.Descriptor.Digest, ipfsURLs, want)
		}
		testimage.Validate(t, dir)
		if n := countIPFSURLs(t, dir); (n > 0) != ipfsURLs {
			t.Fatalf("%d ipfs:// urls in the layout written with ipfs urls %v", n, ipfsURLs)
		}
		// Either form pushed again is the same image: the same root.
		src, err := transport.OpenSource(ctx, "oci:"+dir+":pulled", transport.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		again, err := image.Push(ctx, n, src, image.PushOptions{})
		src.Close()
		if err != nil || again.Root != res.Root {
			t.Fatalf("the layout pulled (ipfs urls %v) pushed again: %s %v, first pushed as %s", ipfsURLs, again.Root, err, res.Root)
		}
		imgs, err := n.Images(ctx)
		if err != nil || len(imgs) != 1 || imgs[0].CID != res.Root.String() {
			t.Fatalf("images after pull: %v %v", imgs, err)
		}
	}
}

// countIPFSURLs counts the descriptors of the layout at dir, index.json
// and every index and manifest, that carry ipfs:// urls.
func countIPFSURLs(t *testing.T, dir string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range append(files, filepath.Join(dir, "index.json")) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Config    *ocispec.Descriptor
			Layers    []ocispec.Descriptor
			Manifests []ocispec.Descriptor
		}
		if json.Unmarshal(data, &doc) != nil {
			continue // a layer or a config
		}
		all := append(doc.Layers, doc.Manifests...)
		if doc.Config != nil {
			all = append(all, *doc.Config)
		}
		for _, d := range all {
			for _, u := range d.URLs {
				if strings.HasPrefix(u, image.URLScheme) {
					n++
				}
			}
		}
	}
	return n
}

func TestPullResumesFetchingOnlyWhatIsMissing(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)
	res := pushIndex(t, ctx, a, 2)

	tree, err := image.Inspect(ctx, b, res.Root, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// An "interrupted" pull: the biggest layer of the first platform arrived.
	layer := tree.Children[0].Children[0].Children[1]
	rc, err := b.Cat(ctx, cid.MustParse(layer.CID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	stat := func() uint64 {
		s, err := receivedBlocks(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	start := stat()
	if _, err := pullTo(ctx, b, res.Root, t.TempDir(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	fetched := stat() - start
	total := uint64(testnode.Blocks(t, a))
	if fetched == 0 || fetched >= total-12 { // the layer is 13 blocks
		t.Fatalf("resumed pull fetched %d blocks of %d", fetched, total)
	}
}

func TestPullErrors(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)

	plain, err := a.Add(ctx, bytes.NewReader([]byte("just a file\n")))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := pullTo(ctx, b, plain, dir, 10*time.Second); !errors.Is(err, image.ErrNotImage) {
		t.Fatalf("pull of a plain file: %v, want ErrNotImage", err)
	}
	assertNoImage(t, b, dir)

	missing := cid.MustParse("bafkreiekrfipoyrwmmrckqwji2ohhpr4jsa3xxybtywfo5mquypsz2nbk4")
	start := time.Now()
	if _, err := pullTo(ctx, b, missing, dir, 2*time.Second); !errors.Is(err, image.ErrTimeout) {
		t.Fatalf("pull of content nobody has: %v, want ErrTimeout", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("timeout of 2s took %s", time.Since(start))
	}
	assertNoImage(t, b, dir)
}

// TestPullRejectsBlobThatDoesNotMatchItsDigest covers a manifest whose
// layer url names a CID of other bytes: every block verifies, the blob does
// not, and nothing is written or pinned.
func TestPullRejectsBlobThatDoesNotMatchItsDigest(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)
	dir := t.TempDir()
	img, err := testimage.Image(3, testimage.Platforms[0], 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteLayout(dir, "v1", img); err != nil {
		t.Fatal(err)
	}
	src, err := transport.OpenSource(ctx, "oci:"+dir+":v1", transport.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	liar := &lyingStore{Store: a}
	res, err := image.Push(ctx, liar, src, image.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	_, err = pullTo(ctx, b, res.Root, out, 10*time.Second)
	if !errors.Is(err, transport.ErrDigestMismatch) {
		t.Fatalf("pull: %v, want ErrDigestMismatch", err)
	}
	assertNoImage(t, b, out)
}

// TestPushRejectsBlobsThatDoNotMatchTheirDigests: a layout blob with a
// byte flipped, or one byte too many, fails the push with the blob named,
// whether the node hashes the digest with the leaves or the reader does,
// and no image is recorded.
func TestPushRejectsBlobsThatDoNotMatchTheirDigests(t *testing.T) {
	ctx := ctxT(t)
	for _, damage := range []struct {
		name string
		do   func([]byte) []byte
	}{
		{"flipped", func(b []byte) []byte { b[len(b)/2] ^= 0xff; return b }},
		{"longer", func(b []byte) []byte { return append(b, 0) }},
		{"shorter", func(b []byte) []byte { return b[:len(b)-1] }},
	} {
		for _, store := range []struct {
			name string
			wrap func(*node.Node) image.Store
		}{
			{"node", func(n *node.Node) image.Store { return n }},
			{"store", func(n *node.Node) image.Store { return struct{ image.Store }{n} }},
		} {
			t.Run(damage.name+"/"+store.name, func(t *testing.T) {
				n := testnode.Offline(t, t.TempDir())
				dir := testimage.IndexLayout(t, 2, 1<<20)
				blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
				var biggest string
				var size int64
				for _, b := range blobs {
					if fi, err := os.Stat(b); err == nil && fi.Size() > size {
						biggest, size = b, fi.Size()
					}
				}
				data, err := os.ReadFile(biggest)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(biggest, damage.do(data), 0o644); err != nil {
					t.Fatal(err)
				}
				src, err := transport.OpenSource(ctx, "oci:"+dir+":v1", transport.SourceOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				_, err = image.Push(ctx, store.wrap(n), src, image.PushOptions{})
				if !errors.Is(err, transport.ErrDigestMismatch) || !strings.Contains(err.Error(), filepath.Base(biggest)) {
					t.Fatalf("push: %v, want ErrDigestMismatch naming %s", err, filepath.Base(biggest))
				}
				if imgs, err := n.Images(ctx); err != nil || len(imgs) != 0 {
					t.Fatalf("a failed push left images %v (%v)", imgs, err)
				}
			})
		}
	}
}

// lyingStore adds one extra byte to every blob over 64 KiB, as a broken or
// malicious publisher would. It has only a store's methods: a node's
// AddHashing would add the blobs as they are.
type lyingStore struct{ image.Store }

func (l *lyingStore) Add(ctx context.Context, r io.Reader) (cid.Cid, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return cid.Undef, err
	}
	if buf.Len() > 64<<10 {
		buf.WriteByte('!')
	}
	return l.Store.Add(ctx, &buf)
}

func assertNoImage(t *testing.T, n *node.Node, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		t.Fatal("a failed pull left an index.json")
	}
	imgs, err := n.Images(context.Background())
	if err != nil || len(imgs) != 0 {
		t.Fatalf("a failed pull left images %v (%v)", imgs, err)
	}
}

func receivedBlocks(n *node.Node) (uint64, error) {
	s, err := n.FetchStat()
	if err != nil {
		return 0, err
	}
	return s.BitswapBlocks + s.GatewayBlocks, nil
}

// TestPullOfABlobNobodyHas: the manifest names a layer whose blocks no peer
// holds; the pull ends at its timeout naming that layer, and leaves nothing.
func TestPullOfABlobNobodyHas(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)
	res := pushIndex(t, ctx, a, 4)
	tree, err := image.Inspect(ctx, a, res.Root, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	layer := tree.Children[0].Children[0].Children[1]
	if err := a.Blockstore().DeleteBlock(ctx, cid.MustParse(layer.CID)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = pullTo(ctx, b, res.Root, dir, 2*time.Second)
	if !errors.Is(err, image.ErrTimeout) || !strings.Contains(err.Error(), layer.Digest) {
		t.Fatalf("pull with a missing layer: %v; want a timeout naming %s", err, layer.Digest)
	}
	assertNoImage(t, b, dir)
}

// TestPullStreamsFromThePeersGateway: between shoal nodes, whole blob DAGs
// come as CAR streams over the trustless gateway protocol, not bitswap.
func TestPullStreamsFromThePeersGateway(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/tcp/", a)
	res := pushIndex(t, ctx, a, 9)
	dir := t.TempDir()
	if _, err := pullTo(ctx, b, res.Root, dir, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The blobs that came as one stream each were stored as packs and
	// linked into the layout rather than written twice.
	blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	linked := 0
	for _, e := range blobs {
		if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", e.Name())); err == nil && fi.Sys().(*syscall.Stat_t).Nlink == 2 {
			linked++
		}
	}
	if linked == 0 {
		t.Errorf("none of the %d blobs in the layout is linked to the node's packs", len(blobs))
	}
	s, err := b.FetchStat()
	if err != nil {
		t.Fatal(err)
	}
	if s.GatewayBlocks == 0 || s.GatewayBytes < uint64(res.Image.Size) {
		t.Fatalf("gateway delivered %d blocks, %d bytes of a %d-byte image (bitswap %d blocks)", s.GatewayBlocks, s.GatewayBytes, res.Image.Size, s.BitswapBlocks)
	}
}

// TestPullOverQUIC: the same pull with the peers connected over QUIC.
func TestPullOverQUIC(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	b := testnode.Online(t, "/quic-v1", a)
	res := pushIndex(t, ctx, a, 10)
	dir := t.TempDir()
	if _, err := pullTo(ctx, b, res.Root, dir, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	testimage.Validate(t, dir)
	for _, c := range b.Host().Network().Conns() {
		if !strings.Contains(c.RemoteMultiaddr().String(), "/quic-v1") {
			t.Fatalf("connected over %s, want QUIC", c.RemoteMultiaddr())
		}
	}
}

// TestLayerIndexesAtPushOrLater: a push indexes every layer; an image
// pushed without indexes gets them from AddIndexes, under the same root
// CID a push with indexes gives, its layer blobs untouched.
func TestLayerIndexesAtPushOrLater(t *testing.T) {
	ctx := ctxT(t)
	n := memstore.New()
	dir := testimage.IndexLayout(t, 41, 300<<10, 2000)
	plain := testimage.Push(ctx, t, n, dir, image.PushOptions{})
	indexed := testimage.Push(ctx, t, n, dir, image.PushOptions{Index: true})
	if plain.Root == indexed.Root {
		t.Fatal("indexing did not change the image")
	}
	later, err := image.AddIndexes(ctx, n, plain.Root, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if later.Root != indexed.Root {
		t.Errorf("indexes added later give %s, at push %s", later.Root, indexed.Root)
	}
	before, err := image.ReadTree(ctx, n, plain.Root, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	after, err := image.ReadTree(ctx, n, later.Root, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	layers := 0
	var windows []cid.Cid
	for d, desc := range after.Blobs {
		if desc.MediaType != ocispec.MediaTypeImageLayerGzip {
			continue
		}
		layers++
		if b, ok := before.Blobs[d]; !ok || b.URLs[0] != desc.URLs[0] {
			t.Errorf("layer %s changed CID: %v → %v", d, b.URLs, desc.URLs)
		}
		ic, err := cid.Decode(strings.TrimPrefix(desc.Annotations[layerindex.AnnotationIndex], image.URLScheme))
		if err != nil {
			t.Fatalf("layer %s: index annotation %q: %v", d, desc.Annotations[layerindex.AnnotationIndex], err)
		}
		rc, err := n.Cat(ctx, ic)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		format := desc.Annotations[layerindex.AnnotationFormat]
		ix, err := layerindex.Open(data, format, desc.Size)
		if err != nil {
			t.Fatalf("layer %s: %v", d, err)
		}
		if format != layerindex.FormatZTOCSplit {
			t.Errorf("layer %s: index format %q, want %q on the embedded node", d, format, layerindex.FormatZTOCSplit)
		}
		wc, err := cid.Decode(strings.TrimPrefix(desc.Annotations[layerindex.AnnotationWindows], image.URLScheme))
		if err != nil {
			t.Fatalf("layer %s: windows annotation: %v", d, err)
		}
		windows = append(windows, wc)
		if len(ix.Entries()) == 0 {
			t.Errorf("layer %s: empty index", d)
		}
		ix.Close()
	}
	if layers == 0 {
		t.Fatal("no gzip layers in the test image")
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for _, wc := range windows {
		rc, err := n.Cat(ctx, wc)
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			t.Errorf("index windows %s after GC: %v", wc, err)
		}
	}
	if _, err := image.ReadTree(ctx, n, later.Root, time.Minute); err != nil {
		t.Fatalf("indexed image after GC: %v", err)
	}
}

// TestAttachedBlobsAreNamedAndPinned: a blob attached to an image (a
// prefetch list) is named in every image manifest and kept by GC.
func TestAttachedBlobsAreNamedAndPinned(t *testing.T) {
	ctx := ctxT(t)
	n := memstore.New()
	pushed := testimage.Push(ctx, t, n, testimage.IndexLayout(t, 43, 1000), image.PushOptions{})
	list, err := n.Add(ctx, strings.NewReader(`{"files":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := image.AddIndexes(ctx, n, pushed.Root, time.Minute, map[string]cid.Cid{"io.shoal.prefetch": list})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RemoveImage(ctx, pushed.Root); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	tree, err := image.ReadTree(ctx, n, res.Root, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	manifests := 0
	for d, doc := range tree.Docs {
		var m ocispec.Manifest
		if json.Unmarshal(doc, &m) != nil || tree.Blobs[d].MediaType != ocispec.MediaTypeImageManifest || m.Config.Digest == "" {
			continue
		}
		if len(tree.Blobs[d].URLs) == 0 {
			continue // the plain view
		}
		manifests++
		if m.Annotations["io.shoal.prefetch"] != image.URLScheme+list.String() {
			t.Errorf("manifest %s annotations %v", d, m.Annotations)
		}
	}
	if manifests != 2 {
		t.Errorf("%d image manifests, want 2", manifests)
	}
	if rc, err := n.Cat(ctx, list); err != nil {
		t.Errorf("the attached blob was collected: %v", err)
	} else if _, err := io.ReadAll(rc); err != nil {
		t.Errorf("the attached blob was collected: %v", err)
	} else {
		rc.Close()
	}
}

// TestPullKeepsAttachedBlobsAndARepushRebuildsMissingOnes: a pull fetches
// and pins the layer indexes with the image, so the puller can serve lazy
// mounts too; pushing the pulled layout on a node that has none of them
// builds them again, to the same root CID.
func TestPullKeepsAttachedBlobsAndARepushRebuildsMissingOnes(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	pushed := testimage.Push(ctx, t, a, testimage.IndexLayout(t, 47, 200<<10), image.PushOptions{Index: true})
	b := testnode.Online(t, "/tcp/", a)
	dir := t.TempDir()
	if _, err := pullTo(ctx, b, pushed.Root, dir, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	tree, err := image.ReadTree(ctx, b, pushed.Root, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	indexes := 0
	for _, d := range tree.Blobs {
		if v := d.Annotations[layerindex.AnnotationIndex]; v != "" && len(d.URLs) > 0 {
			c, _ := cid.Decode(strings.TrimPrefix(v, image.URLScheme))
			if has, _ := b.Blockstore().Has(ctx, c); !has {
				t.Errorf("the puller lost layer index %s", c)
			}
			indexes++
		}
	}
	if indexes == 0 {
		t.Fatal("no layer indexes in the pulled image")
	}
	c := memstore.New()
	src, err := transport.OpenSource(ctx, "oci:"+dir, transport.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	again, err := image.Push(ctx, c, src, image.PushOptions{Index: true})
	if err != nil {
		t.Fatalf("push of a pulled layout on a node without its indexes: %v", err)
	}
	if again.Root != pushed.Root {
		t.Errorf("the pushed-again image is %s, the original %s", again.Root, pushed.Root)
	}
}

// progressLog records what a pull reports.
type progressLog struct {
	mu          sync.Mutex
	total, done int64
	adds        int
	largestStep int64
}

func (p *progressLog) AddTotal(n int64) { p.mu.Lock(); p.total += n; p.mu.Unlock() }
func (p *progressLog) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.adds++
	p.largestStep = max(p.largestStep, n)
}

// A pull reports its bytes as they stream, in small steps, whichever way
// the store reads them: a bar moves with the bytes rather than sitting and
// then jumping to the end.
func TestPullReportsProgressAsBytesArrive(t *testing.T) {
	ctx := ctxT(t)
	a := testnode.Online(t, "/tcp/")
	res := testimage.Push(ctx, t, a, testimage.IndexLayout(t, 61, 24<<20), image.PushOptions{})
	// A daemon's client reads blobs as a plain stream, without the
	// embedded node's hashing read.
	type plainStore struct {
		image.Store
		image.BlobFiles
	}
	for _, name := range []string{"embedded", "plain stream"} {
		t.Run(name, func(t *testing.T) {
			b := testnode.Online(t, "/tcp/", a)
			var s image.Store = b
			if name == "plain stream" {
				s = plainStore{b, b}
			}
			dst, err := transport.OpenDestination("oci:" + t.TempDir() + ":v1")
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			p := &progressLog{}
			if _, err := image.Pull(ctx, s, res.Root, dst, image.PullOptions{Progress: p}); err != nil {
				t.Fatal(err)
			}
			if p.done != p.total || p.total < 24<<20 {
				t.Fatalf("reported %d of %d bytes", p.done, p.total)
			}
			if p.largestStep > 1<<20 || p.adds < 24 {
				t.Fatalf("%d bytes reported in %d steps, the largest %d: the bar would jump", p.done, p.adds, p.largestStep)
			}
		})
	}
}
