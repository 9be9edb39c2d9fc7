package mirror

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-ipfs/shoal/pkg/image"
	"github.com/shoal-ipfs/shoal/pkg/routing"
)

// Protocol is how mirrors ask one another for what they hold or are
// fetching. A request is one line of JSON (request); the answer is one line
// of JSON (answer), followed for "get" by the blob's bytes from the offset
// asked for to its end.
const Protocol = protocol.ID("/shoal/mirror/1.0.0")

const (
	// DefaultAskTimeout bounds how long a request waits for its peers'
	// answers about a blob: on a LAN they answer in a millisecond or two.
	DefaultAskTimeout = 250 * time.Millisecond
	// maxAsked bounds how many connected peers are asked.
	maxAsked = 64
	// chainFanout is how many peers read one download from one node at
	// once; more are sent on to those readers, so that a rollout's nodes
	// pass the blob along a chain, each sending it once, rather than all
	// taking it from the first, which would send it to every one.
	chainFanout = 1
	// maxRedirects bounds how far a reader follows a chain.
	maxRedirects = 8
	maxRequest   = 4 << 10
	maxAnswer    = 64 << 10
)

// Peers is the mirror's side of the swarm.
type Peers struct {
	host   host.Host
	router routing.Router // nil: connected peers only
	// private is whether the swarm is private (a swarm key): only then do
	// peers get private repositories' content.
	private bool
	// AskTimeout bounds how long a request waits for the peers' answers
	// (DefaultAskTimeout if zero).
	AskTimeout time.Duration
	// WholeOnly offers peers only blobs held whole, and never fetches
	// for them: no swarm while pulling (Spegel's behaviour), for
	// comparison.
	WholeOnly bool
	m         *Mirror

	mu sync.Mutex
	// distrusted are peers that sent a blob that did not match its
	// digest, and when: they are not asked again for distrustFor.
	distrusted map[peer.ID]time.Time
	// storedReaders are the peers reading each stored blob from here.
	storedReaders map[digest.Digest]chain
}

// distrustFor is how long a peer that sent wrong bytes is left out.
const distrustFor = 10 * time.Minute

func (p *Peers) distrust(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range ids {
		if id, err := peer.Decode(s); err == nil {
			p.distrusted[id] = time.Now()
		}
	}
}

func (p *Peers) trusted(id peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.distrusted[id]
	if ok && time.Since(t) > distrustFor {
		delete(p.distrusted, id)
		ok = false
	}
	return !ok
}

// NewPeers answers and asks the peers of h; router, if not nil, announces
// digests and finds their holders beyond the connected peers.
func NewPeers(h host.Host, router routing.Router, private bool) *Peers {
	return &Peers{host: h, router: router, private: private, distrusted: map[peer.ID]time.Time{}, storedReaders: map[digest.Digest]chain{}}
}

func (p *Peers) askTimeout() time.Duration {
	if p.AskTimeout > 0 {
		return p.AskTimeout
	}
	return DefaultAskTimeout
}

func (p *Peers) serve(m *Mirror) {
	p.m = m
	p.host.SetStreamHandler(Protocol, p.handle)
}

func (p *Peers) close() { p.host.RemoveStreamHandler(Protocol) }

// DigestKey is the key under which holders of a blob are announced: the
// CID of a raw block whose hash is the blob's sha256 digest.
func DigestKey(d digest.Digest) (cid.Cid, error) {
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil || d.Algorithm() != digest.SHA256 {
		return cid.Undef, fmt.Errorf("digest %s: not sha256", d)
	}
	mh, err := multihash.Encode(raw, multihash.SHA2_256)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

func (p *Peers) announce(d digest.Digest) {
	if p.router == nil {
		return
	}
	if k, err := DigestKey(d); err == nil {
		p.router.Provide(k)
	}
}

type request struct {
	Op       string        `json:"op"` // has, get, tag, forget
	Registry string        `json:"registry"`
	Repo     string        `json:"repo,omitempty"`
	Digest   digest.Digest `json:"digest,omitempty"`
	Tag      string        `json:"tag,omitempty"`
	Offset   int64         `json:"offset,omitempty"`
	// Fetch asks the peer to fetch the blob from the upstream if it is
	// neither stored there nor on its way.
	Fetch bool `json:"fetch,omitempty"`
	// Stay asks the peer to serve rather than send the reader on.
	Stay bool `json:"stay,omitempty"`
}

const (
	stateStored   = "stored"
	stateFetching = "fetching"
)

type answer struct {
	Peer      peer.ID   `json:"-"`
	Mirrors   bool      `json:"mirrors,omitempty"`
	State     string    `json:"state,omitempty"`
	CID       string    `json:"cid,omitempty"`
	Size      int64     `json:"size,omitempty"`
	MediaType string    `json:"mediaType,omitempty"`
	Readers   int       `json:"readers,omitempty"`
	Redirect  []peer.ID `json:"redirect,omitempty"`
	// Path is, for a blob being fetched, the peers it comes through.
	Path []peer.ID  `json:"path,omitempty"`
	Tag  *tagRecord `json:"tag,omitempty"`
	// Public is what the peer knows of the repository's access.
	Public *bool  `json:"public,omitempty"`
	Error  string `json:"error,omitempty"`
}

// readLine reads one JSON line of at most max bytes into v.
func readLine(r *bufio.Reader, max int, v any) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return errors.New("line too long")
		}
		return err
	}
	if len(line) > max {
		return errors.New("line too long")
	}
	return json.Unmarshal(line, v)
}

func writeLine(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// handle answers one request of a peer.
func (p *Peers) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(s, maxRequest)
	var req request
	if err := readLine(br, maxRequest, &req); err != nil {
		s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	if ParseNamespace(req.Registry) != nil || (req.Digest != "" && req.Digest.Validate() != nil) {
		_ = writeLine(s, answer{Error: "bad request"})
		return
	}
	ctx, cancel := context.WithCancel(p.m.ctx)
	defer cancel()
	// The mirror closing ends the request.
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	r := Ref{Registry: req.Registry, Repo: req.Repo}
	switch req.Op {
	case "has":
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = writeLine(s, p.has(ctx, r, req.Digest))
	case "get":
		p.get(ctx, s, s.Conn().RemotePeer(), r, req)
	case "tag":
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		a := answer{Mirrors: p.m.Mirrors(r.Registry)}
		if t, ok, err := p.m.tagRecord(ctx, r, req.Tag); err == nil && ok {
			a.Tag = &t
		}
		_ = writeLine(s, a)
	case "access":
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		a := answer{}
		if pub, ok := p.m.access.known(ctx, r); ok {
			a.Public = &pub
		}
		_ = writeLine(s, a)
	case "forget":
		_ = p.m.Forget(ctx, r, req.Tag, false)
		_ = writeLine(s, answer{})
	default:
		_ = writeLine(s, answer{Error: "unknown op"})
	}
}

// has says what this node has of d.
func (p *Peers) has(ctx context.Context, r Ref, d digest.Digest) answer {
	a := answer{Mirrors: p.m.Mirrors(r.Registry)}
	if rec, ok, err := p.m.lookup(ctx, d); err == nil && ok {
		if rec.Private && !p.private {
			return a
		}
		a.State, a.CID, a.Size, a.MediaType = stateStored, rec.CID, rec.Size, rec.MediaType
		return a
	}
	if dl := p.m.joinDownload(d); dl != nil && !p.WholeOnly {
		dl.mu.Lock()
		if !dl.private || p.private {
			a.State, a.Size, a.Readers, a.Path = stateFetching, dl.size, len(dl.readers), slices.Clone(dl.via)
		}
		dl.mu.Unlock()
	}
	return a
}

// get streams blob d to a peer from req.Offset: from the store, from a
// download running here, or from one started for it.
func (p *Peers) get(ctx context.Context, s network.Stream, from peer.ID, r Ref, req request) {
	fail := func(err error) { _ = writeLine(s, answer{Error: err.Error()}) }
	d := req.Digest
	if rec, ok, err := p.m.lookup(ctx, d); err == nil && ok && (!rec.Private || p.private) {
		desc, err := rec.descriptor(d)
		if err != nil {
			fail(err)
			return
		}
		if req.Offset < 0 || req.Offset > desc.Size {
			fail(errors.New("offset out of range"))
			return
		}
		// A blob stored here goes to one reader at a time, as a download
		// does (chainFanout): the others are sent on to the readers, so
		// that a rollout passes it along a chain, each node sending it
		// once, rather than every node taking it from this one.
		if on, ok := p.readStored(d, from, req.Stay); !ok {
			_ = writeLine(s, answer{State: stateStored, Redirect: on})
			return
		}
		defer p.doneStored(d, from)
		c, _ := cid.Decode(rec.CID)
		rc, err := image.CatAt(ctx, p.m.store, c, req.Offset)
		if err != nil {
			fail(err)
			return
		}
		defer rc.Close()
		if writeLine(s, answer{State: stateStored, Size: desc.Size, MediaType: rec.MediaType}) == nil {
			n, _ := sendToPeer(s, rc)
			p.m.metrics.served.WithLabelValues(r.Registry, "to-peer").Add(float64(n))
		}
		return
	}
	dl := p.m.joinDownload(d)
	if p.WholeOnly {
		dl = nil
	}
	if dl == nil && req.Fetch && p.m.Mirrors(r.Registry) && !p.WholeOnly {
		private := p.m.access.private(r)
		if private && !p.private {
			fail(errors.New("private content is not served to peers outside a private swarm"))
			return
		}
		sources, err := p.m.sources(r, d, nil)
		if err != nil {
			fail(err)
			return
		}
		if dl, err = p.m.startDownload(r, d, "", private, sources); err != nil {
			fail(err)
			return
		}
	}
	if dl == nil || (dl.private && !p.private) {
		fail(fmt.Errorf("%s is not here: %w", d, errdefs.ErrNotFound))
		return
	}
	dl.mu.Lock()
	if slices.Contains(dl.via, from) {
		dl.mu.Unlock()
		fail(fmt.Errorf("%s comes here through you: read it from elsewhere", d))
		return
	}
	on, admitted := dl.readers.admit(from, req.Stay)
	dl.mu.Unlock()
	if !admitted {
		_ = writeLine(s, answer{State: stateFetching, Redirect: on})
		return
	}
	defer func() {
		dl.mu.Lock()
		dl.readers.done(from)
		dl.mu.Unlock()
	}()
	size, err := dl.waitSize(ctx)
	if err != nil {
		fail(err)
		return
	}
	if req.Offset < 0 || req.Offset > size {
		fail(errors.New("offset out of range"))
		return
	}
	rd, err := dl.follow(ctx, req.Offset, true)
	if err != nil {
		fail(err)
		return
	}
	defer rd.Close()
	if writeLine(s, answer{State: stateFetching, Size: size}) == nil {
		n, err := sendToPeer(s, rd)
		p.m.metrics.served.WithLabelValues(r.Registry, "to-peer").Add(float64(n))
		if err != nil {
			s.Reset()
		}
	}
}

// chain are the peers reading one blob from this node, and how many
// reads each has open. A blob goes to chainFanout readers at a time; any
// other is sent on to them, so that a rollout passes it along a chain.
type chain map[peer.ID]int

// admit adds a read by from, unless chainFanout others read already and
// from may be sent on (not stay): then it returns them to send it to.
func (c chain) admit(from peer.ID, stay bool) ([]peer.ID, bool) {
	if !stay && len(c) >= chainFanout && c[from] == 0 {
		var on []peer.ID
		for id := range c {
			on = append(on, id)
		}
		return on, false
	}
	c[from]++
	return nil, true
}

// done ends a read that admit added.
func (c chain) done(from peer.ID) {
	if c[from]--; c[from] <= 0 {
		delete(c, from)
	}
}

// readStored admits from as a reader of stored blob d (chain.admit).
func (p *Peers) readStored(d digest.Digest, from peer.ID, stay bool) ([]peer.ID, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	readers := p.storedReaders[d]
	if readers == nil {
		readers = chain{}
		p.storedReaders[d] = readers
	}
	return readers.admit(from, stay)
}

// serving reports whether a peer is reading a stored blob from here.
func (p *Peers) serving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.storedReaders) > 0
}

// doneStored ends a read that readStored admitted.
func (p *Peers) doneStored(d digest.Digest, from peer.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	readers := p.storedReaders[d]
	readers.done(from)
	if len(readers) == 0 {
		delete(p.storedReaders, d)
	}
}

// ask asks the connected peers, and those the router knows to hold d,
// what they have of d, within the ask timeout. The router's lookup runs
// beside the connected peers' answers, not after them: a blob nobody has
// yet, as every blob of a cold rollout, waits for the slower of the two
// rather than for both in turn.
func (p *Peers) ask(ctx context.Context, r Ref, d digest.Digest) []answer {
	ctx, cancel := context.WithTimeout(ctx, p.askTimeout())
	defer cancel()
	peers := p.host.Network().Peers()
	if len(peers) > maxAsked {
		peers = peers[:maxAsked]
	}
	req := request{Op: "has", Registry: r.Registry, Repo: r.Repo, Digest: d}
	k, err := DigestKey(d)
	if p.router == nil || err != nil {
		return p.askAll(ctx, peers, req)
	}
	lookup, stopLookup := context.WithCancel(ctx)
	defer stopLookup()
	found := make(chan []peer.ID, 1)
	go func() { found <- routing.Connect(lookup, p.host, p.router, k, 8, p.askTimeout()/2) }()
	out := p.askAll(ctx, peers, req)
	if slices.ContainsFunc(out, func(a answer) bool { return a.State != "" }) {
		stopLookup()
		<-found
		return out
	}
	holders := slices.DeleteFunc(<-found, func(id peer.ID) bool { return slices.Contains(peers, id) })
	return append(out, p.askAll(ctx, holders, req)...)
}

func (p *Peers) askAll(ctx context.Context, peers []peer.ID, req request) []answer {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []answer
	)
	for _, id := range peers {
		if !p.trusted(id) {
			continue
		}
		wg.Go(func() {
			a, err := p.roundTrip(ctx, id, req)
			if err != nil {
				return
			}
			a.Peer = id
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// roundTrip sends one request and reads its answer line.
func (p *Peers) roundTrip(ctx context.Context, id peer.ID, req request) (answer, error) {
	s, err := p.host.NewStream(network.WithNoDial(ctx, "mirror"), id, Protocol)
	if err != nil {
		return answer{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeLine(s, req); err != nil {
		s.Reset()
		return answer{}, err
	}
	var a answer
	if err := readLine(bufio.NewReaderSize(s, maxAnswer), maxAnswer, &a); err != nil {
		s.Reset()
		return answer{}, err
	}
	return a, nil
}

// askTag asks the connected peers for their newest record of tag.
func (p *Peers) askTag(ctx context.Context, r Ref, tag string) (tagRecord, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.askTimeout())
	defer cancel()
	var best tagRecord
	found := false
	for _, a := range p.askAll(ctx, p.host.Network().Peers(), request{Op: "tag", Registry: r.Registry, Repo: r.Repo, Tag: tag}) {
		if t := a.Tag; t != nil && t.Digest.Validate() == nil && (!found || t.Resolved.After(best.Resolved)) {
			best, found = *t, true
		}
	}
	return best, found
}

// askAccess asks the connected peers whether r is public: known is
// false when none knows; any peer that knows it private makes it so.
func (p *Peers) askAccess(ctx context.Context, r Ref) (public, known bool) {
	ctx, cancel := context.WithTimeout(ctx, p.askTimeout())
	defer cancel()
	for _, a := range p.askAll(ctx, p.host.Network().Peers(), request{Op: "access", Registry: r.Registry, Repo: r.Repo}) {
		if a.Public == nil {
			continue
		}
		if !*a.Public {
			return false, true
		}
		public, known = true, true
	}
	return public, known
}

// forget tells the connected peers to drop their record of tag.
func (p *Peers) forget(ctx context.Context, r Ref, tag string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p.askAll(ctx, p.host.Network().Peers(), request{Op: "forget", Registry: r.Registry, Repo: r.Repo, Tag: tag})
}

// sources are the peers a download of d reads from: those fetching it,
// the least read first, then those that hold it; without any, the peer
// ranked first for d among those that mirror the registry, asked to fetch
// it, unless this node ranks first itself.
func (p *Peers) sources(r Ref, d digest.Digest, answers []answer) []source {
	if p.WholeOnly {
		return nil
	}
	var fetching []answer
	for _, a := range answers {
		// A peer whose bytes come through this node would send them
		// back here, in a circle that stalls.
		if a.State == stateFetching && !slices.Contains(a.Path, p.host.ID()) {
			fetching = append(fetching, a)
		}
	}
	slices.SortFunc(fetching, func(a, b answer) int { return a.Readers - b.Readers })
	var out []source
	for _, a := range fetching {
		out = append(out, p.source(r, d, a.Peer, false, a.Path))
	}
	// Then the peers that hold it whole. Each node ranks them with its
	// own ID in the hash: readers that start together spread over the
	// holders, and those that pick the same one chain there (a holder
	// serves one reader and sends the others on to it), so that k
	// holders feed k shorter chains rather than one long one.
	for _, id := range holders(p.host.ID(), d, answers) {
		out = append(out, p.source(r, d, id, false, nil))
	}
	if len(out) > 0 {
		return out
	}
	best, bestScore := p.host.ID(), rank(p.host.ID(), d)
	for _, a := range answers {
		if a.Mirrors && a.State == "" {
			if s := rank(a.Peer, d); bytes.Compare(s[:], bestScore[:]) > 0 {
				best, bestScore = a.Peer, s
			}
		}
	}
	if best != p.host.ID() {
		out = append(out, p.source(r, d, best, true, nil))
	}
	return out
}

// holders are the peers whose answers say they hold d whole, in the
// order node self asks them.
func holders(self peer.ID, d digest.Digest, answers []answer) []peer.ID {
	var out []peer.ID
	for _, a := range answers {
		if a.State == stateStored {
			out = append(out, a.Peer)
		}
	}
	slices.SortFunc(out, func(a, b peer.ID) int {
		ra, rb := rank(self+a, d), rank(self+b, d)
		return bytes.Compare(rb[:], ra[:])
	})
	return out
}

// rank orders the peers for a digest: the same order on every node.
func rank(id peer.ID, d digest.Digest) [sha256.Size]byte {
	return sha256.Sum256(append([]byte(id), d.String()...))
}

// source reads d from peer id, following its redirects along a chain;
// via is the path of id's download.
func (p *Peers) source(r Ref, d digest.Digest, id peer.ID, fetch bool, via []peer.ID) source {
	return source{name: "peer", from: id.String(), path: append([]peer.ID{id}, via...), open: func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		req := request{Op: "get", Registry: r.Registry, Repo: r.Repo, Digest: d, Offset: offset, Fetch: fetch}
		at := id
		for hop := 0; ; hop++ {
			req.Stay = hop == maxRedirects
			rc, a, err := p.open(ctx, at, req)
			if err != nil {
				return nil, 0, err
			}
			if rc != nil {
				return rc, a.Size, nil
			}
			next := slices.DeleteFunc(a.Redirect, func(x peer.ID) bool { return x == p.host.ID() })
			if len(next) == 0 {
				// Only this node reads from there: read all the same.
				req.Stay = true
				next = []peer.ID{at}
			}
			at, req.Fetch = next[0], false
		}
	}}
}

// open sends a get: a reader of the bytes, or the answer's redirect.
func (p *Peers) open(ctx context.Context, id peer.ID, req request) (io.ReadCloser, answer, error) {
	s, err := p.host.NewStream(ctx, id, Protocol)
	if err != nil {
		return nil, answer{}, err
	}
	_ = s.SetDeadline(time.Now().Add(p.m.opts.StallTimeout + 3*time.Second))
	if err := writeLine(s, req); err != nil {
		s.Reset()
		return nil, answer{}, err
	}
	br := bufio.NewReaderSize(s, 256<<10)
	var a answer
	if err := readLine(br, maxAnswer, &a); err != nil {
		s.Reset()
		return nil, answer{}, err
	}
	if a.Error != "" {
		s.Reset()
		return nil, a, fmt.Errorf("peer %s: %s", id, a.Error)
	}
	if len(a.Redirect) > 0 {
		s.Close()
		return nil, a, nil
	}
	if a.State == "" {
		s.Reset()
		return nil, a, fmt.Errorf("peer %s: %s is not there: %w", id, req.Digest, errdefs.ErrNotFound)
	}
	_ = s.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	return &peerStream{Reader: br, s: s, stop: stop}, a, nil
}

type peerStream struct {
	io.Reader
	s    network.Stream
	stop func() bool
}

func (ps *peerStream) Close() error {
	ps.stop()
	return ps.s.Reset()
}

// peerWriteTimeout cuts off a peer that stops reading.
const peerWriteTimeout = 30 * time.Second

// deadlineWriter moves the stream's write deadline with every write.
// sendToPeer copies a blob to a peer's stream in pieces of 256 KiB, as the
// registry sends its clients: io.Copy's 32 KiB pieces cost a deadline, a
// read of the spool or store and a trip through the muxer and TLS each, on
// a node that may be sending a layer to several peers at once.
func sendToPeer(s network.Stream, r io.Reader) (int64, error) {
	buf := sendBuffers.Get().(*[]byte)
	defer sendBuffers.Put(buf)
	return io.CopyBuffer(deadlineWriter{s}, r, *buf)
}

var sendBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

type deadlineWriter struct{ s network.Stream }

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.s.SetWriteDeadline(time.Now().Add(peerWriteTimeout))
	return w.s.Write(p)
}
