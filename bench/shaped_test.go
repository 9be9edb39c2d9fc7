package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
)

// shapedLink is the link of the shaped benchmarks: 100 Mbit/s each way,
// and 10 ms on each host's end, so 20 ms one way between two hosts (a
// 40 ms round trip).
var shapedLink = testbed.Link{Rate: "100mbit", Delay: 10 * time.Millisecond}

// shapedPair is a testbed of two hosts behind links shaped as link, with
// a shoal daemon on the first: the origin. It returns the origin's home
// and swarm address, and the second host, where the benchmark's puller
// runs.
func shapedPair(b *testing.B, link testbed.Link) (origin []string, addr string, puller *testbed.Host) {
	b.Helper()
	tb := testbed.ForTest(b, 2, link)
	origin = shoalHome(b, "kubo", "flatfs")
	d := startShoalDaemon(b, origin, &tb.Hosts[0], "--listen", "/ip4/"+tb.Hosts[0].Addr+"/tcp/4077")
	return origin, d.addr, &tb.Hosts[1]
}

// BenchmarkLazyStartShaped is BenchmarkLazyStart with the peer and the
// puller behind shapedLink.
func BenchmarkLazyStartShaped(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces, mounting and chroot need root")
	}
	_, size := imageBlobs(b)
	origin, addr, puller := shapedPair(b, shapedLink)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+debImage+":bookworm"))
	lazyStart(b, origin, root, addr, puller, size)
}

// BenchmarkLazyStartPythonShaped is BenchmarkLazyStartPython with the peer
// and the puller behind shapedLink.
func BenchmarkLazyStartPythonShaped(b *testing.B) {
	requireTools(b)
	if os.Geteuid() != 0 {
		b.Skip("network namespaces, mounting and chroot need root")
	}
	image := pythonImage(b)
	origin, addr, puller := shapedPair(b, shapedLink)
	root := lastLine(output(b, origin, shoalBin, "push", "oci:"+image+":bookworm"))
	lazyStart(b, origin, root, addr, puller, layoutSize(b, image), pythonHello...)
}

// argv is the command line that runs name with args on host, or here
// when host is nil.
func argv(host *testbed.Host, name string, args ...string) []string {
	if host == nil {
		return append([]string{name}, args...)
	}
	return host.Argv(name, args...)
}

// httpGetHere is an HTTP/1.0 GET dialled on the calling goroutine, so
// that a testbed host's namespace (Host.Do) applies; net/http's client
// dials on goroutines of its own.
func httpGetHere(url string) (*http.Response, error) {
	addr, path, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	return http.ReadResponse(bufio.NewReader(conn), nil)
}

// metricSum adds up the values of a Prometheus metric (all its labels) at
// url, fetched from host (nil: here).
func metricSum(b *testing.B, host *testbed.Host, url, name string) int64 {
	b.Helper()
	var resp *http.Response
	get := func() (err error) {
		resp, err = httpGetHere(url)
		return err
	}
	var err error
	if host == nil {
		err = get()
	} else {
		err = host.Do(get)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil {
			total += v
		}
	}
	return int64(total)
}
