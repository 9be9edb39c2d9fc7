package registry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics count the registry's requests and the bytes it sends.
type metrics struct {
	requests *prometheus.CounterVec
	sent     *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

// newMetrics registers with reg, or keeps the counters to itself when reg
// is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_requests_total",
			Help: "Registry requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_sent_bytes_total",
			Help: "Bytes of response bodies the registry sent, by route.",
		}, []string{"route"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_registry_request_duration_seconds",
			Help:    "Time to answer a registry request, by route.",
			Buckets: []float64{.001, .005, .02, .1, .5, 2, 10, 60},
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.sent, m.seconds)
	}
	return m
}

var routeNames = map[kind]string{
	kindBase: "base", kindCatalog: "catalog", kindManifest: "manifest", kindBlob: "blob",
	kindUploads: "upload", kindUpload: "upload", kindTags: "tags", kindReferrers: "referrers",
}

// track wraps w to count what the request gets.
func (m *metrics) track(w http.ResponseWriter, r *http.Request, rt route, routeErr error) *trackedWriter {
	name := routeNames[rt.kind]
	if routeErr != nil {
		name = "invalid"
	}
	return &trackedWriter{ResponseWriter: w, m: m, route: name, method: r.Method, start: time.Now()}
}

type trackedWriter struct {
	http.ResponseWriter
	m             *metrics
	route, method string
	start         time.Time
	code          int
	bytes         int64
}

func (t *trackedWriter) WriteHeader(code int) {
	if t.code == 0 {
		t.code = code
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackedWriter) Write(p []byte) (int, error) {
	if t.code == 0 {
		t.code = http.StatusOK
	}
	n, err := t.ResponseWriter.Write(p)
	t.bytes += int64(n)
	return n, err
}

// done records the request; it runs even when a handler cuts a response
// off with a panic.
func (t *trackedWriter) done() {
	if t.code == 0 {
		t.code = http.StatusOK
	}
	t.m.requests.WithLabelValues(t.route, t.method, strconv.Itoa(t.code)).Inc()
	t.m.sent.WithLabelValues(t.route).Add(float64(t.bytes))
	t.m.seconds.WithLabelValues(t.route).Observe(time.Since(t.start).Seconds())
}
