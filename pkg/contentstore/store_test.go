package contentstore

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/content/testsuite"
	"github.com/containerd/containerd/v2/plugins/services/content/contentserver"
	"github.com/containerd/errdefs"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shoal-ipfs/shoal/pkg/store/memstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// newStore opens a store over an IPFS store in memory, its uploads under
// root.
func newStore(t *testing.T, root string) (*Store, *memstore.Store) {
	t.Helper()
	n := memstore.New()
	s, err := New(n, dssync.MutexWrap(ds.NewMapDatastore()), filepath.Join(root, "ingest"))
	if err != nil {
		t.Fatal(err)
	}
	return s, n
}

// TestContainerdSuite runs containerd's own content store tests on the
// store.
func TestContainerdSuite(t *testing.T) {
	testsuite.ContentSuite(t, "shoal", func(ctx context.Context, root string) (context.Context, content.Store, func() error, error) {
		s, _ := newStore(t, root)
		return ctx, s, func() error { return nil }, nil
	})
}

// TestContainerdSuiteThroughGRPC runs them again as containerd sees the
// store: through its content proxy, over a unix socket.
func TestContainerdSuiteThroughGRPC(t *testing.T) {
	testsuite.ContentSuite(t, "shoal-grpc", func(ctx context.Context, root string) (context.Context, content.Store, func() error, error) {
		s, _ := newStore(t, root)
		srv := grpc.NewServer(GRPCOptions()...)
		contentapi.RegisterContentServer(srv, contentserver.New(s))
		sock := filepath.Join(t.TempDir(), "c.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			return ctx, nil, nil, err
		}
		go srv.Serve(l)
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return ctx, nil, nil, err
		}
		return ctx, proxy.NewContentStore(conn), func() error { conn.Close(); srv.Stop(); return nil }, nil
	})
}

// TestBlobsLiveInIPFSWhileContainerdKeepsThem: a committed blob is the
// node's blob, under the CID its bytes have anywhere in shoal, pinned
// until containerd deletes it, and a peer could fetch it by that CID.
func TestBlobsLiveInIPFSWhileContainerdKeepsThem(t *testing.T) {
	ctx := context.Background()
	s, n := newStore(t, t.TempDir())
	data := bytes.Repeat([]byte("layer bytes "), 200_000) // several chunks
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, s, "ref", bytes.NewReader(data), desc, content.WithLabels(map[string]string{"k": "v"})); err != nil {
		t.Fatal(err)
	}
	c, err := s.CID(ctx, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	want, err := memstore.New().Add(ctx, bytes.NewReader(data))
	if err != nil || c != want {
		t.Fatalf("stored as %s, the same bytes elsewhere are %s (%v)", c, want, err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	ra, err := s.ReaderAt(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	if _, err := ra.ReadAt(got, 1_000_003); err != nil || !bytes.Equal(got, data[1_000_003:1_000_103]) {
		t.Fatalf("ReadAt after GC: %v", err)
	}
	before := n.Blocks()
	if err := s.Delete(ctx, desc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if after := n.Blocks(); after >= before {
		t.Errorf("%d blocks before the delete, %d after GC", before, after)
	}
	if _, err := s.Info(ctx, desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("info after delete: %v", err)
	}
}
