package mirror

import (
	"io"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	served           *prometheus.CounterVec
	received         *prometheus.CounterVec
	upstreamRequests *prometheus.CounterVec
	firstByte        *prometheus.HistogramVec
	downloads        *prometheus.HistogramVec
	tags             *prometheus.CounterVec
	cached           prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mirror_served_bytes_total",
			Help: "Bytes of mirrored manifests and blobs served, by registry and where they were: local (the store), peer (a manifest read from peers by CID), fetching (a download running here, from peers or the upstream), to-peer (sent to other nodes).",
		}, []string{"registry", "from"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mirror_received_bytes_total",
			Help: "Bytes of blobs downloaded by the mirror, by registry and source: peer or upstream.",
		}, []string{"registry", "source"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mirror_upstream_requests_total",
			Help: "Requests sent to upstream registries, by registry and kind: resolve (a tag), manifest, blob, check (access).",
		}, []string{"registry", "kind"}),
		firstByte: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_mirror_first_byte_seconds",
			Help:    "Time from asking a source for a blob to its answer, by source: peer or upstream.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"source"}),
		downloads: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_mirror_download_duration_seconds",
			Help:    "Time to bring a blob into the store, from the first request to its digest checked, by result: ok or failed.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		}, []string{"result"}),
		tags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_mirror_tag_cache_total",
			Help: "Tags asked for, by registry and whether the cache answered (hit) or the upstream was asked (miss).",
		}, []string{"registry", "result"}),
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_mirror_cached_bytes",
			Help: "Bytes of mirrored content kept, as last counted against the cache budget.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.served, m.received, m.upstreamRequests, m.firstByte, m.downloads, m.tags, m.cached)
	}
	return m
}

// countingReader counts the bytes read through it.
type countingReader struct {
	io.ReadCloser
	c prometheus.Counter
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.Add(float64(n))
	return n, err
}
