package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoal-ipfs/shoal/internal/buildinfo"
	"github.com/shoal-ipfs/shoal/internal/httpserve"
	"github.com/shoal-ipfs/shoal/pkg/node"
	"golang.org/x/sync/errgroup"
)

// readyCheck is one thing /readyz asks: its name, and nil when it holds.
type readyCheck struct {
	name  string
	check func(context.Context) error
}

// readyTimeout bounds each readiness check: a probe that hangs is a
// failed probe, and kubelet's own timeout is a second by default.
const readyTimeout = 900 * time.Millisecond

// startHealth serves, at addr, what a cluster's kubelet and Prometheus
// ask a node: /metrics, /healthz (the process serves HTTP) and /readyz
// (every check holds), and with status the status page at / for a person
// with a browser. It is apart from the registry so that it can be reached
// from beyond loopback without opening the registry; it serves nothing but
// what its paths say, and takes no input. It returns the address it
// listens on.
func startHealth(ctx context.Context, g *errgroup.Group, addr string, metrics *prometheus.Registry, checks []readyCheck, status *statusPage, log *slog.Logger) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listener: %w; choose another address with --metrics-listen or [daemon] metrics-listen in config.toml (empty turns it off)", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		report, ok := runChecks(r.Context(), checks)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, report)
	})
	if status != nil {
		status.register(mux)
		g.Go(func() error { status.run(ctx); return nil })
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	bound := l.Addr().String()
	log.Info("metrics and health listening", "address", bound, "paths", "/ (status) /metrics /healthz /readyz")
	g.Go(func() error { return httpserve.Until(ctx, hs, l) })
	return bound, nil
}

// runChecks runs every check at once and reports each on a line, as
// Kubernetes' own components do: "[+]name ok" or "[-]name failed: why".
func runChecks(ctx context.Context, checks []readyCheck) (string, bool) {
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			errs[i] = c.check(cctx)
		})
	}
	wg.Wait()
	var b strings.Builder
	ok := true
	for i, c := range checks {
		if errs[i] != nil {
			ok = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, errs[i])
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		}
	}
	if ok {
		b.WriteString("ready\n")
	} else {
		b.WriteString("not ready\n")
	}
	return b.String(), ok
}

// probeCID is asked of the store to see that it answers; no node holds
// it, and the answer does not matter, only that one comes.
var probeCID = cid.MustParse("bafkqaaa")

// storeReady holds while the node's store answers.
func storeReady(n *node.Node) readyCheck {
	return readyCheck{"store", func(ctx context.Context) error {
		_, err := n.Blockstore().Has(ctx, probeCID)
		return err
	}}
}

// swarmReady holds while the swarm listens.
func swarmReady(n *node.Node) readyCheck {
	return readyCheck{"swarm", func(context.Context) error {
		if len(n.Host().Network().ListenAddresses()) == 0 {
			return errors.New("listening on no address")
		}
		return nil
	}}
}

// registryReady holds while the registry at addr answers its base route.
// Any answer below 500 is one: with credentials required it is a 401.
func registryReady(addr string, useTLS bool) readyCheck {
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	client := &http.Client{Transport: &http.Transport{
		// The registry's certificate names the node, not the loopback
		// address the check dials; what is checked is that it serves.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a liveness probe of our own listener
		DisableKeepAlives: true,
	}}
	url := scheme + "://" + dialable(addr) + "/v2/"
	return readyCheck{"registry", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("%s answers %s", url, resp.Status)
		}
		return nil
	}}
}

// socketReady holds while something accepts connections on a unix socket.
func socketReady(name, path string) readyCheck {
	return readyCheck{name, func(ctx context.Context) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
		if err != nil {
			return err
		}
		return c.Close()
	}}
}

// dialable turns a listener's address into one to dial: an unspecified
// host (0.0.0.0, ::) is reached on loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// buildInfoCollector reports which shoal serves, as build_info metrics do:
// one series whose labels say it, at 1.
type buildInfoCollector struct{}

var buildInfoDesc = prometheus.NewDesc("shoal_build_info", "Which shoal this is: version, commit, Go version and the hashing path this CPU takes; always 1.", []string{"version", "commit", "goversion", "hashing"}, nil)

func (buildInfoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- buildInfoDesc }

func (buildInfoCollector) Collect(ch chan<- prometheus.Metric) {
	i := buildinfo.Read()
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, i.Version, i.Commit, i.GoVersion, i.HashingPath)
}
