package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/shoal-ipfs/shoal/pkg/image"
)

// A command's lease lives as long as one request to the daemon: the
// daemon takes the lease, answers with its ID, and releases it when the
// request ends, whether the command released it or died. A lease can
// therefore never outlive the command that took it.

// leases are the commands' leases the daemon holds, by ID.
type leases struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]image.Lease
}

type leaseReply struct{ ID uint64 }

func (s *Server) lease(w http.ResponseWriter, r *http.Request) {
	l, err := s.node.Lease(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	defer l.Release(context.WithoutCancel(r.Context()))
	s.leases.mu.Lock()
	s.leases.next++
	id := s.leases.next
	if s.leases.m == nil {
		s.leases.m = map[uint64]image.Lease{}
	}
	s.leases.m[id] = l
	s.leases.mu.Unlock()
	defer func() {
		s.leases.mu.Lock()
		delete(s.leases.m, id)
		s.leases.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(leaseReply{ID: id}); err != nil {
		return
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	<-r.Context().Done()
}

func (s *Server) keep(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, invalid("lease %q", r.PathValue("id")))
		return
	}
	var roots []string
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&roots); err != nil {
		writeError(w, invalid("%v", err))
		return
	}
	cs := make([]cid.Cid, len(roots))
	for i, s := range roots {
		if cs[i], err = cid.Decode(s); err != nil {
			writeError(w, invalid("%v", err))
			return
		}
	}
	s.leases.mu.Lock()
	l := s.leases.m[id]
	s.leases.mu.Unlock()
	if l == nil {
		writeError(w, invalid("lease %d is not held", id))
		return
	}
	if err := l.Keep(r.Context(), cs...); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Lease takes a lease in the daemon (image.Leaser), held until Release or
// until this process ends.
func (c *Client) Lease(ctx context.Context) (image.Lease, error) {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	resp, err := c.send(lctx, http.MethodPost, "/v0/lease", nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("lease: %w", err)
	}
	var reply leaseReply
	if err := json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&reply); err != nil {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("lease: %w", err)
	}
	return &clientLease{c: c, id: reply.ID, cancel: cancel, body: resp.Body}, nil
}

type clientLease struct {
	c      *Client
	id     uint64
	cancel context.CancelFunc
	body   interface{ Close() error }
	once   sync.Once
}

func (l *clientLease) Keep(ctx context.Context, roots ...cid.Cid) error {
	ss := make([]string, len(roots))
	for i, c := range roots {
		ss[i] = c.String()
	}
	data, err := json.Marshal(ss)
	if err != nil {
		return err
	}
	return l.c.do(ctx, http.MethodPost, "/v0/lease/"+strconv.FormatUint(l.id, 10)+"/keep", bytes.NewReader(data), nil)
}

func (l *clientLease) Release(context.Context) error {
	l.once.Do(func() {
		l.cancel()
		l.body.Close()
	})
	return nil
}
