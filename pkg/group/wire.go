package group

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The group protocol: after the handshake (auth.go), one request and one
// response per stream, each a JSON object on one line.
//
//   - sync: the asker sends its shard records and the members it is
//     connected to; the answer is the same from the other side. Both merge
//     the records (last writer wins) and dial members they did not know.
//   - status: the asker names an image; the answer is what this member
//     keeps of it (MemberStatus).
type request struct {
	Op      string          `json:"Op"`
	Shards  []Record        `json:"Shards,omitempty"`
	Members []peer.AddrInfo `json:"Members,omitempty"`
	Root    string          `json:"Root,omitempty"`
}

type response struct {
	Shards  []Record        `json:"Shards,omitempty"`
	Members []peer.AddrInfo `json:"Members,omitempty"`
	Status  *MemberStatus   `json:"Status,omitempty"`
	Error   string          `json:"Error,omitempty"`
}

// Record is a shard record as it travels between members, and to the
// daemon's clients.
type Record struct {
	Root     string    `json:"Root"`
	Replicas int       `json:"Replicas"`
	Updated  time.Time `json:"Updated"`
}

const (
	// maxReplicas bounds a record's replicas: more than any group has.
	maxReplicas = 1 << 10
	// askTimeout bounds one exchange with one member.
	askTimeout = 10 * time.Second
)

// decodeMessage reads one message of at most maxMessage bytes, the only
// one of r.
func decodeMessage(r io.Reader, v any) error {
	return (&lines{r: bufio.NewReader(r)}).read(v, maxMessage)
}

func encodeMessage(w io.Writer, v any) error { return (&lines{w: w}).write(v) }

// parseShards checks records from a peer: a bad one, or too many, refuses
// the lot.
func parseShards(ws []Record) ([]Shard, error) {
	if len(ws) > maxRecords {
		return nil, fmt.Errorf("%d shard records in one message, more than %d", len(ws), maxRecords)
	}
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

func toRecord(s Shard) Record {
	return Record{Root: s.Root.String(), Replicas: s.Replicas, Updated: s.Updated}
}

func toWire(ss []Shard) []Record {
	out := make([]Record, len(ss))
	for i, s := range ss {
		out[i] = toRecord(s)
	}
	return out
}

// ask proves membership to member p, checks that p is one, sends req and
// reads p's response.
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
	l := newLines(s)
	if err := g.keys.dial(l, g.self, p); err != nil {
		s.Reset()
		if errors.Is(err, errNotMember) {
			g.disproven(p, err)
		}
		return response{}, fmt.Errorf("group handshake with %s: %w", p, err)
	}
	g.proven(p)
	if err := l.write(req); err != nil {
		s.Reset()
		return response{}, err
	}
	_ = s.CloseWrite()
	var resp response
	if err := l.read(&resp, maxMessage); err != nil {
		s.Reset()
		return response{}, err
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("member %s: %s", p, resp.Error)
	}
	return resp, nil
}

// sync exchanges records and members with member p. When it fails, the
// next observe tries again (after a while, if p proved no key).
func (g *Group) sync(ctx context.Context, p peer.ID) error {
	err := func() error {
		resp, err := g.ask(ctx, p, request{Op: "sync", Shards: toWire(g.Shards()), Members: g.memberAddrs()})
		if err != nil {
			return err
		}
		return g.learn(ctx, p, resp.Shards, resp.Members)
	}()
	if err != nil {
		g.unsync(p)
	}
	return err
}

// learn merges records and dials members heard of from member from.
func (g *Group) learn(ctx context.Context, from peer.ID, ws []Record, members []peer.AddrInfo) error {
	if len(members) > maxMembersPerMessage {
		return fmt.Errorf("%d members in one message, more than %d", len(members), maxMembersPerMessage)
	}
	recs, err := parseShards(ws)
	if err != nil {
		return err
	}
	if _, _, err := g.merge(ctx, g.notAhead(from, recs)); err != nil {
		return err
	}
	h := g.n.Host()
	for _, m := range members {
		if m.ID == g.self || m.ID == "" || len(m.Addrs) == 0 || h.Network().Connectedness(m.ID) == network.Connected {
			continue
		}
		m.Addrs = m.Addrs[:min(len(m.Addrs), maxAddrs)]
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

// notAhead drops, and logs, the records from member from dated more than
// maxSkew ahead of this member's clock.
func (g *Group) notAhead(from peer.ID, recs []Shard) []Shard {
	limit := time.Now().Add(maxSkew)
	var out, ahead []Shard
	for _, r := range recs {
		if r.Updated.After(limit) {
			ahead = append(ahead, r)
		} else {
			out = append(out, r)
		}
	}
	if len(ahead) > 0 {
		g.log.Warn("refused shard records dated ahead of this member's clock by more than the skew allowed", "peer", from,
			"records", len(ahead), "image", ahead[0].Root, "dated", ahead[0].Updated, "skew", maxSkew)
	}
	return out
}

// serve answers one request from another member, once it has proven it is
// one.
func (g *Group) serve(ctx context.Context, s network.Stream) {
	p := s.Conn().RemotePeer()
	done, ok := g.admit(p)
	if !ok {
		s.Reset()
		return
	}
	defer done()
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(askTimeout))
	l := newLines(s)
	if err := g.keys.accept(l, g.self, p); err != nil {
		s.Reset()
		if errors.Is(err, errNotMember) {
			g.disproven(p, err)
		}
		return
	}
	g.proven(p)
	var req request
	if err := l.read(&req, maxMessage); err != nil {
		s.Reset()
		return
	}
	var resp response
	switch req.Op {
	case "sync":
		if err := g.learn(ctx, p, req.Shards, req.Members); err != nil {
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
	if err := l.write(resp); err != nil {
		s.Reset()
	}
}

// Shard records are kept under the group's metadata, one key per image.
func recordKey(root cid.Cid) ds.Key { return ds.NewKey(root.String()) }

// merge adopts those of recs newer than what this member knows, durably;
// it reports whether anything changed, and the roots of records refused
// for the bound on records (maxRecords).
func (g *Group) merge(ctx context.Context, recs []Shard) (changed bool, refused []cid.Cid, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var room []Shard // records of images out of care, oldest first, when first needed
	roomRead := false
	for _, r := range recs {
		old, ok := g.shards[r.Root]
		if ok && !newer(r, old) {
			continue
		}
		if !ok && len(g.shards) >= maxRecords {
			if !roomRead {
				room, roomRead = g.outOfCare(), true
			}
			for len(room) > 0 && !same(g.shards[room[0].Root], room[0]) {
				room = room[1:] // replaced since
			}
			if len(room) == 0 {
				refused = append(refused, r.Root)
				continue
			}
			if err := g.forget(ctx, room[0].Root); err != nil {
				return changed, refused, err
			}
			room = room[1:]
			changed = true
		}
		data, err := json.Marshal(toRecord(r))
		if err != nil {
			return changed, refused, err
		}
		if err := g.meta.Put(ctx, recordKey(r.Root), data); err != nil {
			return changed, refused, err
		}
		g.shards[r.Root] = r
		changed = true
	}
	if len(refused) > 0 {
		g.log.Warn("refused shard records: a member keeps at most this many, and none left is of an image out of care",
			"max", maxRecords, "records", len(refused), "image", refused[0])
	}
	if !changed {
		return false, refused, nil
	}
	if err := g.meta.Sync(ctx, ds.NewKey("/")); err != nil {
		return true, refused, err
	}
	g.dirty = true
	g.poke()
	return true, refused, nil
}

// outOfCare are the records of images out of the group's care, oldest
// first: those forgotten first at the bound on records. g.mu is held.
func (g *Group) outOfCare() []Shard {
	var out []Shard
	for _, s := range g.shards {
		if s.Replicas == 0 {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Shard) int { return a.Updated.Compare(b.Updated) })
	return out
}

// forget drops the record of root, whose hold the next reconcile
// releases. g.mu is held.
func (g *Group) forget(ctx context.Context, root cid.Cid) error {
	if err := g.meta.Delete(ctx, recordKey(root)); err != nil {
		return err
	}
	delete(g.shards, root)
	delete(g.plans, root)
	delete(g.kept, root)
	delete(g.tooLarge, root)
	g.forgotten = append(g.forgotten, root)
	return nil
}

// load reads the records kept from earlier runs. One dated ahead of the
// clock (stored before records were checked for it) counts as dated now,
// so that any later record replaces it.
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
		var w Record
		if err := json.Unmarshal(r.Value, &w); err != nil {
			return fmt.Errorf("shard record %s: %w", r.Key, err)
		}
		recs, err := parseShards([]Record{w})
		if err != nil {
			return err
		}
		rec := recs[0]
		if now := time.Now().UTC(); rec.Updated.After(now.Add(maxSkew)) {
			g.log.Warn("a stored shard record is dated ahead of this member's clock; it counts as dated now", "image", rec.Root, "dated", rec.Updated)
			rec.Updated = now
		}
		g.shards[rec.Root] = rec
	}
	g.dirty = true
	return nil
}
