package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/internal/errkind"
	"github.com/shoal-ipfs/shoal/internal/httpserve"
	"github.com/shoal-ipfs/shoal/pkg/catalog"
	"github.com/shoal-ipfs/shoal/pkg/group"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

// Server exposes a node on a unix socket.
type Server struct {
	node *node.Node
	opts ServerOptions
	srv  *http.Server
	// leases are the leases commands hold (see lease.go).
	leases leases
}

// ServerOptions are what a daemon runs besides the node, which the
// socket reports and serves.
type ServerOptions struct {
	// Registry is the registry's address; empty if none listens.
	Registry string
	// Containerd is the socket of the containerd plugins; empty if none.
	Containerd string
	// Group is the daemon's membership of a group, if any.
	Group *group.Group
	// Mirror is the registry's mirror, if it mirrors any registry.
	Mirror *mirror.Mirror
	Log    *slog.Logger
}

// NewServer serves n and what opts name.
func NewServer(n *node.Node, opts ServerOptions) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{node: n, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v0/id", s.id)
	mux.HandleFunc("POST /v0/add", s.add)
	mux.HandleFunc("GET /v0/cat/{cid}", s.cat)
	mux.HandleFunc("GET /v0/read/{cid}", s.readAt)
	mux.HandleFunc("GET /v0/blobfile/{cid}", s.blobFile)
	mux.HandleFunc("GET /v0/images", s.images)
	mux.HandleFunc("POST /v0/images", s.pinImage)
	mux.HandleFunc("GET /v0/images/{cid}", s.image)
	mux.HandleFunc("DELETE /v0/images/{cid}", s.removeImage)
	mux.HandleFunc("POST /v0/gc", s.gc)
	mux.HandleFunc("POST /v0/verify", s.verify)
	mux.HandleFunc("POST /v0/lease", s.lease)
	mux.HandleFunc("POST /v0/lease/{id}/keep", s.keep)
	mux.HandleFunc("POST /v0/connect", s.connect)
	mux.HandleFunc("POST /v0/shard", s.shard)
	mux.HandleFunc("GET /v0/status/{cid}", s.status)
	mux.HandleFunc("POST /v0/mirror/forget", s.forgetTag)
	// Profiles, for whoever can reach the socket (its owner).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Serve listens on the socket until ctx ends. A stale socket left by a
// killed daemon is replaced; the store lock, held by the node, guarantees
// no live daemon owns it.
func (s *Server) Serve(ctx context.Context, socket string) error {
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return err
	}
	defer os.Remove(socket)
	return httpserve.Until(ctx, s.srv, l)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(errkind.HTTPStatus(err))
	_ = json.NewEncoder(w).Encode(errorBody{Message: err.Error(), Kind: errkind.Name(err)})
}

// invalid is an error of the client's request (400), in its own words.
func invalid(format string, args ...any) error {
	return errkind.New(fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

func pathCID(r *http.Request) (cid.Cid, error) {
	c, err := cid.Decode(r.PathValue("cid"))
	if err != nil {
		return cid.Undef, invalid("CID %q: %v", r.PathValue("cid"), err)
	}
	return c, nil
}

func (s *Server) id(w http.ResponseWriter, r *http.Request) {
	id, err := s.node.ID(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	id.Registry = s.opts.Registry
	id.Containerd = s.opts.Containerd
	if s.opts.Group != nil {
		id.Group = s.opts.Group.Name()
	}
	writeJSON(w, id)
}

type addResult struct {
	Cid string `json:"Cid"`
}

// add stores the body as a blob; with ?chunks=framed the body is chunks,
// each a uvarint length and that many bytes, and each becomes a block of
// its own.
func (s *Server) add(w http.ResponseWriter, r *http.Request) {
	var c cid.Cid
	var err error
	if form := r.URL.Query().Get("chunks"); form != "" {
		if form != "framed" {
			writeError(w, invalid("chunks=%q: want chunks=framed", form))
			return
		}
		framed := &framedChunks{r: bufio.NewReader(r.Body)}
		c, err = s.node.AddChunks(r.Context(), framed)
		if framed.err != nil {
			err = invalid("%v", framed.err)
		}
	} else {
		c, err = s.node.Add(r.Context(), r.Body)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, addResult{Cid: c.String()})
}

// readAt answers ?offset=N&length=M with those bytes of the blob, fewer
// at its end.
func (s *Server) readAt(w http.ResponseWriter, r *http.Request) {
	c, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	off, err1 := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	n, err2 := strconv.Atoi(r.URL.Query().Get("length"))
	if err1 != nil || err2 != nil || off < 0 || n < 0 || n > 16<<20 {
		writeError(w, invalid("want offset >= 0 and length up to 16 MiB"))
		return
	}
	buf := make([]byte, n)
	k, err := s.node.ReadBlobAt(r.Context(), c, buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(k))
	_, _ = w.Write(buf[:k])
}

func (s *Server) cat(w http.ResponseWriter, r *http.Request) {
	c, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rc, err := s.node.Cat(r.Context(), c)
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if _, err := io.Copy(w, rc); err != nil {
		// Headers are gone; breaking the connection is the only way to
		// tell the client its bytes are incomplete.
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) images(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.node.Images(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, imgs)
}

func (s *Server) image(w http.ResponseWriter, r *http.Request) {
	c, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	img, err := s.node.Image(r.Context(), c)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, img)
}

func (s *Server) pinImage(w http.ResponseWriter, r *http.Request) {
	var img catalog.Image
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&img); err != nil {
		writeError(w, invalid("image record: %v", err))
		return
	}
	if err := s.node.PinImage(r.Context(), img); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	c, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.node.RemoveImage(r.Context(), c); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// blobFileReply says where the daemon keeps a whole blob as one file.
type blobFileReply struct {
	Path string
	Size int64
	OK   bool
}

// blobFile tells a command on this machine the file of a whole blob, so
// that a pull into an OCI layout links it instead of copying the bytes
// that came over the socket.
func (s *Server) blobFile(w http.ResponseWriter, r *http.Request) {
	c, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var reply blobFileReply
	reply.Path, reply.Size, reply.OK, err = s.node.BlobFile(r.Context(), c)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, reply)
}

func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	res, err := s.node.GC(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, res)
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	res, err := s.node.Verify(r.Context(), r.URL.Query().Get("repair") == "true")
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, res)
}

type connectRequest struct {
	Addrs []string `json:"Addrs"`
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var req connectRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	if _, err := node.ParsePeerAddrs(req.Addrs); err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	if err := s.node.AddPeerAddrs(r.Context(), req.Addrs); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ShardRequest asks the daemon's group to shard an image.
type ShardRequest struct {
	Root     string `json:"Root"`
	Replicas int    `json:"Replicas"`
}

var errNoGroup = errkind.New("this daemon is in no group; start it with --group NAME (or [group] name in config.toml)", errdefs.ErrFailedPrecondition)

func (s *Server) shard(w http.ResponseWriter, r *http.Request) {
	if s.opts.Group == nil {
		writeError(w, errNoGroup)
		return
	}
	var req ShardRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	root, err := cid.Decode(req.Root)
	if err != nil {
		writeError(w, invalid("CID %q: %v", req.Root, err))
		return
	}
	res, err := s.opts.Group.Shard(r.Context(), root, req.Replicas)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, res)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.opts.Group == nil {
		writeError(w, errNoGroup)
		return
	}
	root, err := pathCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	st, err := s.opts.Group.Status(r.Context(), root)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, st)
}

// ForgetRequest drops a mirrored tag's record.
type ForgetRequest struct {
	// Image is REGISTRY/REPOSITORY:TAG.
	Image string `json:"image"`
	// Local keeps the peers' records.
	Local bool `json:"local,omitempty"`
}

func (s *Server) forgetTag(w http.ResponseWriter, r *http.Request) {
	if s.opts.Mirror == nil {
		writeError(w, errkind.New("this daemon mirrors no registry; start it with --mirror REGISTRY", errdefs.ErrFailedPrecondition))
		return
	}
	var req ForgetRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	ref, tag, err := mirror.ParseTagged(req.Image)
	if err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	if err := s.opts.Mirror.Forget(r.Context(), ref, tag, !req.Local); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, struct{}{})
}
