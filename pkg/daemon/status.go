package daemon

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/shoal-ipfs/shoal/internal/buildinfo"
	"github.com/shoal-ipfs/shoal/pkg/group"
	"github.com/shoal-ipfs/shoal/pkg/mirror"
	"github.com/shoal-ipfs/shoal/pkg/node"
)

//go:embed status.html
var statusHTML []byte

// The status page keeps an hour of samples, one every statusEvery.
const (
	statusEvery   = 10 * time.Second
	statusSamples = 360
)

// statusPage is what an operator sees opening a node in a browser: its
// peers, its images and, over the last hour, the bytes it served and
// received and where the bytes it pulled came from. The page (status.html)
// draws /status.json; the samples are the node's own metrics, read every
// statusEvery.
type statusPage struct {
	n       *node.Node
	mirror  *mirror.Mirror // nil without mirror mode
	group   *group.Group   // nil outside a group
	metrics prometheus.Gatherer

	mu      sync.Mutex
	samples []statusSample
}

// statusSample is the node's running totals at one moment, in bytes; the
// page draws their rates.
type statusSample struct {
	At time.Time `json:"at"`
	// Served is what the node sent: to peers over the swarm, and to
	// clients of its registry.
	Served float64 `json:"served"`
	// Received is what came to it: from peers over the swarm, and from
	// upstream registries.
	Received float64 `json:"received"`
	// Pulled splits what the registry served by where it came from: the
	// node's store (already here), peers, or upstream registries.
	FromStore    float64 `json:"fromStore"`
	FromPeers    float64 `json:"fromPeers"`
	FromUpstream float64 `json:"fromUpstream"`
}

// run samples the metrics until ctx ends.
func (s *statusPage) run(ctx context.Context) {
	s.sample()
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *statusPage) sample() {
	families, err := s.metrics.Gather()
	if err != nil && len(families) == 0 {
		return
	}
	sum := func(name string, match func(labels map[string]string) bool) float64 {
		var total float64
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if match != nil && !match(labelMap(m)) {
					continue
				}
				total += m.GetCounter().GetValue()
			}
		}
		return total
	}
	is := func(key string, values ...string) func(map[string]string) bool {
		return func(l map[string]string) bool {
			for _, v := range values {
				if l[key] == v {
					return true
				}
			}
			return false
		}
	}
	upstream := sum("shoal_mirror_received_bytes_total", is("source", "upstream"))
	peers := sum("shoal_fetched_bytes_total", nil) + sum("shoal_mirror_received_bytes_total", is("source", "peer"))
	blobsSent := sum("shoal_registry_sent_bytes_total", is("route", "blob"))
	smp := statusSample{
		At:           time.Now().UTC(),
		Served:       sum("shoal_swarm_sent_bytes_total", nil) + sum("shoal_registry_sent_bytes_total", nil),
		Received:     sum("shoal_swarm_received_bytes_total", nil) + upstream,
		FromPeers:    peers,
		FromUpstream: upstream,
		// What the registry sent that did not have to come to the node.
		FromStore: max(0, blobsSent-peers-upstream),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, smp)
	if len(s.samples) > statusSamples {
		s.samples = append(s.samples[:0], s.samples[len(s.samples)-statusSamples:]...)
	}
}

func labelMap(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// statusReport is /status.json.
type statusReport struct {
	Node struct {
		ID        string   `json:"id"`
		Addresses []string `json:"addresses"`
		Version   string   `json:"version"`
		Commit    string   `json:"commit"`
		Hashing   string   `json:"hashing"`
	} `json:"node"`
	Peers    []statusPeer   `json:"peers"`
	Images   []statusImage  `json:"images"`
	Mirrored []mirror.Image `json:"mirrored"`
	Group    *statusGroup   `json:"group,omitempty"`
	Samples  []statusSample `json:"samples"`
	Interval float64        `json:"intervalSeconds"`
}

type statusPeer struct {
	ID        string   `json:"id"`
	Addresses []string `json:"addresses"`
}

type statusImage struct {
	CID       string    `json:"cid"`
	Source    string    `json:"source"`
	Platforms []string  `json:"platforms"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created"`
}

type statusGroup struct {
	Name      string        `json:"name"`
	Members   int           `json:"members"`
	KeptBytes uint64        `json:"keptBytes"`
	Shards    []group.Shard `json:"shards"`
}

func (s *statusPage) report(ctx context.Context) statusReport {
	var r statusReport
	info := buildinfo.Read()
	r.Node.Version, r.Node.Commit, r.Node.Hashing = info.Version, info.Commit, info.Hashing
	if id, err := s.n.ID(ctx); err == nil {
		r.Node.ID, r.Node.Addresses = id.ID, id.Addresses
	}
	net := s.n.Host().Network()
	for _, p := range net.Peers() {
		sp := statusPeer{ID: p.String(), Addresses: []string{}}
		for _, c := range net.ConnsToPeer(p) {
			sp.Addresses = append(sp.Addresses, c.RemoteMultiaddr().String())
		}
		r.Peers = append(r.Peers, sp)
	}
	sort.Slice(r.Peers, func(i, j int) bool { return r.Peers[i].ID < r.Peers[j].ID })
	if imgs, err := s.n.Images(ctx); err == nil {
		for _, img := range imgs {
			r.Images = append(r.Images, statusImage{CID: img.CID, Source: img.Source, Platforms: img.Platforms, Size: img.Size, Created: img.Created})
		}
	}
	if s.mirror != nil {
		r.Mirrored, _ = s.mirror.Images(ctx)
	}
	if s.group != nil {
		_, kept := s.group.Kept()
		r.Group = &statusGroup{Name: s.group.Name(), Members: len(s.group.Members()), KeptBytes: kept, Shards: s.group.Shards()}
	}
	s.mu.Lock()
	r.Samples = append([]statusSample{}, s.samples...)
	s.mu.Unlock()
	r.Interval = statusEvery.Seconds()
	// Empty lists, not null, for the page.
	if r.Peers == nil {
		r.Peers = []statusPeer{}
	}
	if r.Images == nil {
		r.Images = []statusImage{}
	}
	if r.Mirrored == nil {
		r.Mirrored = []mirror.Image{}
	}
	return r
}

func (s *statusPage) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
		_, _ = w.Write(statusHTML)
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.report(r.Context()))
	})
}
