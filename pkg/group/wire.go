package group

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The group protocol: one request and one response per stream, each a JSON
// object on one line.
//
//   - sync: the asker sends its shard records and the members it is
//     connected to; the answer is the same from the other side. Both merge
//     the records (last writer wins) and dial members they did not know.
//   - status: the asker names an image; the answer is what this member
//     keeps of it (MemberStatus).
type request struct {
	Op      string          `json:"Op"`
	Shards  []wireShard     `json:"Shards,omitempty"`
	Members []peer.AddrInfo `json:"Members,omitempty"`
	Root    string          `json:"Root,omitempty"`
}

type response struct {
	Shards  []wireShard     `json:"Shards,omitempty"`
	Members []peer.AddrInfo `json:"Members,omitempty"`
	Status  *MemberStatus   `json:"Status,omitempty"`
	Error   string          `json:"Error,omitempty"`
}

type wireShard struct {
	Root     string    `json:"Root"`
	Replicas int       `json:"Replicas"`
	Updated  time.Time `json:"Updated"`
}

const (
	// maxMessage bounds what a member reads from another.
	maxMessage = 4 << 20
	// maxReplicas bounds a record's replicas: more than any group has.
	maxReplicas = 1 << 10
	// askTimeout bounds one exchange with one member.
	askTimeout = 10 * time.Second
)

// decodeMessage reads one message of at most maxMessage bytes.
func decodeMessage(r io.Reader, v any) error {
	line, err := bufio.NewReader(io.LimitReader(r, maxMessage)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return fmt.Errorf("read group message: %w", err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("group message: %w", err)
	}
	return nil
}

func encodeMessage(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// parseShards checks records from a peer: a bad one refuses the lot.
func parseShards(ws []wireShard) ([]Shard, error) {
	out := make([]Shard, 0, len(ws))
	for _, w := range ws {
		c, err := cid.Decode(w.Root)
		if err != nil {
			return nil, fmt.Errorf("shard record %q: %w", w.Root, err)
		}
		if w.Replicas < 0 || w.Replicas > maxReplicas {
			return nil, fmt.Errorf("shard record %s: replicas %d out of range", c, w.Replicas)
		}
		out = append(out, Shard{Root: c, Replicas: w.Replicas, Updated: w.Updated.UTC()})
	}
	return out, nil
}

func toWire(ss []Shard) []wireShard {
	out := make([]wireShard, len(ss))
	for i, s := range ss {
		out[i] = wireShard{Root: s.Root.String(), Replicas: s.Replicas, Updated: s.Updated}
	}
	return out
}

// ask sends req to member p and reads its response.
func (g *Group) ask(ctx context.Context, p peer.ID, req request) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	s, err := g.n.Host().NewStream(network.WithNoDial(ctx, "members are connected"), p, g.proto)
	if err != nil {
		return response{}, err
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	if err := encodeMessage(s, req); err != nil {
		s.Reset()
		return response{}, err
	}
	_ = s.CloseWrite()
	var resp response
	if err := decodeMessage(s, &resp); err != nil {
		s.Reset()
		return response{}, err
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("member %s: %s", p, resp.Error)
	}
	return resp, nil
}

// sync exchanges records and members with member p.
func (g *Group) sync(ctx context.Context, p peer.ID) error {
	resp, err := g.ask(ctx, p, request{Op: "sync", Shards: toWire(g.Shards()), Members: g.memberAddrs()})
	if err != nil {
		return err
	}
	return g.learn(ctx, resp.Shards, resp.Members)
}

// learn merges records and dials members heard of from another member.
func (g *Group) learn(ctx context.Context, ws []wireShard, members []peer.AddrInfo) error {
	recs, err := parseShards(ws)
	if err != nil {
		return err
	}
	if _, err := g.merge(ctx, recs); err != nil {
		return err
	}
	h := g.n.Host()
	for _, m := range members {
		if m.ID == g.self || m.ID == "" || len(m.Addrs) == 0 || h.Network().Connectedness(m.ID) == network.Connected {
			continue
		}
		g.bg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, askTimeout)
			defer cancel()
			if err := h.Connect(cctx, m); err != nil {
				g.log.Debug("dialling a member heard of from another failed", "peer", m.ID, "err", err)
			}
		})
	}
	return nil
}

// memberAddrs are the connected members with their addresses.
func (g *Group) memberAddrs() []peer.AddrInfo {
	h := g.n.Host()
	var out []peer.AddrInfo
	for _, p := range g.Members() {
		if p != g.self && h.Network().Connectedness(p) == network.Connected {
			out = append(out, h.Peerstore().PeerInfo(p))
		}
	}
	return out
}

// serve answers one request from another member.
func (g *Group) serve(ctx context.Context, s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(askTimeout))
	var req request
	if err := decodeMessage(s, &req); err != nil {
		s.Reset()
		return
	}
	var resp response
	switch req.Op {
	case "sync":
		if err := g.learn(ctx, req.Shards, req.Members); err != nil {
			resp.Error = err.Error()
			break
		}
		resp.Shards, resp.Members = toWire(g.Shards()), g.memberAddrs()
	case "status":
		root, err := cid.Decode(req.Root)
		if err != nil {
			resp.Error = fmt.Sprintf("root %q: %v", req.Root, err)
			break
		}
		st, err := g.localStatus(ctx, root)
		if err != nil {
			resp.Error = err.Error()
			break
		}
		resp.Status = &st
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	if err := encodeMessage(s, resp); err != nil {
		s.Reset()
	}
}

// Shard records are kept under the group's metadata, one key per image.
func recordKey(root cid.Cid) ds.Key { return ds.NewKey(root.String()) }

// merge adopts those of recs newer than what this member knows, durably;
// it reports whether anything changed.
func (g *Group) merge(ctx context.Context, recs []Shard) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	for _, r := range recs {
		if old, ok := g.shards[r.Root]; ok && !newer(r, old) {
			continue
		}
		data, err := json.Marshal(toWire([]Shard{r})[0])
		if err != nil {
			return changed, err
		}
		if err := g.meta.Put(ctx, recordKey(r.Root), data); err != nil {
			return changed, err
		}
		g.shards[r.Root] = r
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := g.meta.Sync(ctx, ds.NewKey("/")); err != nil {
		return true, err
	}
	g.dirty = true
	g.poke()
	return true, nil
}

// load reads the records kept from earlier runs.
func (g *Group) load(ctx context.Context) error {
	res, err := g.meta.Query(ctx, query.Query{})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		var w wireShard
		if err := json.Unmarshal(r.Value, &w); err != nil {
			return fmt.Errorf("shard record %s: %w", r.Key, err)
		}
		recs, err := parseShards([]wireShard{w})
		if err != nil {
			return err
		}
		g.shards[recs[0].Root] = recs[0]
	}
	g.dirty = true
	return nil
}
