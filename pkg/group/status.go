package group

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MemberStatus is what one member keeps of a sharded image.
type MemberStatus struct {
	Peer string `json:"Peer"`
	// Members is how many members this one counts, itself included.
	Members int `json:"Members"`
	// Replicas is the image's replicas as this member knows it.
	Replicas int `json:"Replicas"`
	// Chunks and HeldChunks count the image's chunks and those this member
	// keeps; HeldBytes is their size, Share its part of the image's bytes.
	Chunks     int     `json:"Chunks"`
	HeldChunks int     `json:"HeldChunks"`
	HeldBytes  uint64  `json:"HeldBytes"`
	Share      float64 `json:"Share"`
	// Held has bit i set when this member keeps the image's chunk i.
	Held []byte `json:"Held,omitempty"`
	// Error says why the member did not answer.
	Error string `json:"Error,omitempty"`
}

// Status is how a sharded image is spread over the group.
type Status struct {
	Root     string         `json:"Root"`
	Group    string         `json:"Group"`
	Replicas int            `json:"Replicas"`
	Chunks   int            `json:"Chunks"`
	Size     uint64         `json:"Size"` // of the chunks
	Members  []MemberStatus `json:"Members"`
	// Covered counts chunks kept by at least one member that answered,
	// Replicated those kept by at least Replicas of them.
	Covered    int `json:"Covered"`
	Replicated int `json:"Replicated"`
}

// localStatus is what this member keeps of the image at root.
func (g *Group) localStatus(ctx context.Context, root cid.Cid) (MemberStatus, error) {
	g.mu.Lock()
	rec, ok := g.shards[root]
	g.mu.Unlock()
	if !ok || rec.Replicas == 0 {
		return MemberStatus{}, fmt.Errorf("%s is not sharded in group %s; shard it with `shoal shard %s`", root, g.name, root)
	}
	p, err := g.plan(ctx, root)
	if err != nil {
		return MemberStatus{}, err
	}
	st := MemberStatus{Peer: g.self.String(), Members: len(g.Members()), Replicas: rec.Replicas, Chunks: len(p.chunks), Held: make([]byte, (len(p.chunks)+7)/8)}
	g.mu.Lock()
	kept := g.kept[root]
	g.mu.Unlock()
	for i, l := range p.chunks {
		if !kept[l.CID] {
			continue
		}
		if has, err := g.n.Blockstore().Has(ctx, l.CID); err != nil {
			return MemberStatus{}, err
		} else if has {
			st.Held[i/8] |= 1 << (i % 8)
			st.HeldChunks++
			st.HeldBytes += l.Size
		}
	}
	if p.size > 0 {
		st.Share = float64(st.HeldBytes) / float64(p.size)
	}
	return st, nil
}

// Status asks every member what it keeps of the image at root. A member
// that does not answer is listed with its error.
func (g *Group) Status(ctx context.Context, root cid.Cid) (Status, error) {
	mine, err := g.localStatus(ctx, root)
	if err != nil {
		return Status{}, err
	}
	p, err := g.plan(ctx, root)
	if err != nil {
		return Status{}, err
	}
	st := Status{Root: root.String(), Group: g.name, Replicas: mine.Replicas, Chunks: len(p.chunks), Size: p.size}
	members := g.Members()
	answers := make([]MemberStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		if m == g.self {
			answers[i] = mine
			continue
		}
		wg.Go(func() { answers[i] = g.memberStatus(ctx, m, root, len(p.chunks)) })
	}
	wg.Wait()
	st.Members = answers
	for i := range p.chunks {
		holders := 0
		for _, a := range answers {
			if i/8 < len(a.Held) && a.Held[i/8]&(1<<(i%8)) != 0 {
				holders++
			}
		}
		if holders > 0 {
			st.Covered++
		}
		if holders >= st.Replicas {
			st.Replicated++
		}
	}
	slices.SortFunc(st.Members, func(a, b MemberStatus) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return st, nil
}

func (g *Group) memberStatus(ctx context.Context, m peer.ID, root cid.Cid, chunks int) MemberStatus {
	resp, err := g.ask(ctx, m, request{Op: "status", Root: root.String()})
	switch {
	case err != nil:
		return MemberStatus{Peer: m.String(), Error: err.Error()}
	case resp.Status == nil:
		return MemberStatus{Peer: m.String(), Error: "no status in the answer"}
	case resp.Status.Peer != m.String() || resp.Status.Chunks != chunks || len(resp.Status.Held) != (chunks+7)/8:
		return MemberStatus{Peer: m.String(), Error: "the answer does not describe this image as this member sees it"}
	}
	return *resp.Status
}

// Kept is what this member keeps of all sharded images: chunks and bytes.
func (g *Group) Kept() (chunks int, bytes uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for root, kept := range g.kept {
		p := g.plans[root]
		if p == nil {
			continue
		}
		for _, l := range p.chunks {
			if kept[l.CID] {
				chunks++
				bytes += l.Size
			}
		}
	}
	return chunks, bytes
}
