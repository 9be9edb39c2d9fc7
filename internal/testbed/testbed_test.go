package testbed

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reach reports whether from can open a TCP connection to l.
func reach(tb *Testbed, from Host, addr string) bool {
	var conn net.Conn
	from.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, time.Second)
		return err
	})
	if conn == nil {
		return false
	}
	conn.Close()
	return true
}

// serve listens on host's port 7000 until the test ends, sending size
// bytes to each connection and closing it.
func serve(t *testing.T, host Host, size int) net.Listener {
	t.Helper()
	var l net.Listener
	if err := host.Do(func() (err error) {
		l, err = net.Listen("tcp", host.Addr+":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, strings.NewReader(strings.Repeat("x", size)))
				c.Close()
			}()
		}
	}()
	return l
}

func TestHostsReachEachOtherThroughShapedLinks(t *testing.T) {
	tb := ForTest(t, 3, Link{Rate: "50mbit"})
	l := serve(t, tb.Hosts[0], 5<<20)
	addr := l.Addr().String()
	for _, h := range tb.Hosts[1:] {
		if !reach(tb, h, addr) {
			t.Errorf("%s cannot reach %s", h.Name, addr)
		}
	}
	// 5 MiB at 50 Mbit/s takes about 0.8 s: the shaping holds.
	var conn net.Conn
	tb.Hosts[1].Do(func() (err error) { conn, err = net.Dial("tcp", addr); return err })
	start := time.Now()
	n, _ := io.Copy(io.Discard, conn)
	conn.Close()
	rate := float64(n) * 8 / time.Since(start).Seconds() / 1e6
	t.Logf("%d bytes at %.0f Mbit/s", n, rate)
	if sent, err := tb.Sent(tb.Hosts[0]); err != nil || sent < uint64(n) || sent > uint64(n)*11/10 {
		t.Errorf("host 0 sent %d bytes (%v) for %d of payload", sent, err, n)
	}
	if rate > 75 {
		t.Errorf("a 50 Mbit/s link carried %.0f Mbit/s", rate)
	}

	// A host shaped on its own gets the new rate both ways: tbf on its
	// way out, and the switch lets no more in.
	if err := tb.Shape(tb.Hosts[1], Link{Rate: "10mbit"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", tb.Hosts[1].Name, "tc", "qdisc", "show", "dev", device).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rate 10Mbit") {
		t.Errorf("after Shape, the device of %s: %v\n%s", tb.Hosts[1].Name, err, out)
	}
	tb.Hosts[1].Do(func() (err error) { conn, err = net.Dial("tcp", addr); return err })
	start = time.Now()
	n, _ = io.Copy(io.Discard, conn)
	conn.Close()
	rate = float64(n) * 8 / time.Since(start).Seconds() / 1e6
	t.Logf("shaped to 10 Mbit/s: %d bytes in at %.1f Mbit/s", n, rate)
	if rate > 15 {
		t.Errorf("a link shaped to 10 Mbit/s let %.1f Mbit/s in", rate)
	}

	if err := tb.Cut(tb.Hosts[2]); err != nil {
		t.Fatal(err)
	}
	if reach(tb, tb.Hosts[2], addr) {
		t.Error("a cut host reached another")
	}
	if err := tb.Heal(tb.Hosts[2]); err != nil {
		t.Fatal(err)
	}
	healed := false
	for try := 0; try < 5 && !healed; try++ { // a first SYN may meet a port still coming up
		healed = reach(tb, tb.Hosts[2], addr)
	}
	if !healed {
		t.Error("a healed host cannot reach another")
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	tb := ForTest(t, 2, Link{})
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), owner) {
		t.Errorf("namespaces left:\n%s", out)
	}
}

// TestLossyLinksDropPacketsAndTCPCarriesOn: with 3% loss a host drops
// some of what it sends, and a TCP transfer still delivers every byte.
func TestLossyLinksDropPacketsAndTCPCarriesOn(t *testing.T) {
	tb := ForTest(t, 2, Link{Rate: "50mbit", Loss: 3})
	payload := strings.Repeat("0123456789abcdef", 128<<10) // 2 MiB
	var l net.Listener
	if err := tb.Hosts[0].Do(func() (err error) {
		l, err = net.Listen("tcp", tb.Hosts[0].Addr+":7001")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, strings.NewReader(payload))
		c.Close()
	}()
	var conn net.Conn
	if err := tb.Hosts[1].Do(func() (err error) { conn, err = net.Dial("tcp", l.Addr().String()); return err }); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || string(got) != payload {
		t.Fatalf("received %d of %d bytes (%v)", len(got), len(payload), err)
	}
	// The loss rule counts what the kernel hands it, and TCP's segments
	// reach it coalesced: 2 MiB can be as few as 32 of them, of which 3%
	// drops none one time in three. 1,000 datagrams drop none one time
	// in 10^13.
	if err := tb.Hosts[0].Do(func() error {
		// Unconnected, so that the port unreachable answers of the
		// other end fail no write.
		u, err := net.ListenPacket("udp", tb.Hosts[0].Addr+":0")
		if err != nil {
			return err
		}
		defer u.Close()
		to := &net.UDPAddr{IP: net.ParseIP(tb.Hosts[1].Addr), Port: 7002}
		for range 1000 {
			// A datagram the rule drops fails its write with EPERM.
			if _, err := u.WriteTo([]byte("datagram"), to); err != nil && !errors.Is(err, syscall.EPERM) {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	dropped, err := tb.Dropped(tb.Hosts[0])
	if err != nil || dropped == 0 {
		t.Errorf("the sender dropped %d packets (%v) at 3%% loss", dropped, err)
	}
	t.Logf("%d packets dropped on the way", dropped)
	if _, err := New(context.Background(), 1, Link{Loss: 100}); err == nil {
		t.Error("a loss of 100% was accepted")
	}
}

// TestDelayLengthensTheRoundTrip: with 15 ms of delay on each end of
// each link, a TCP handshake between two hosts (one round trip) takes at
// least 60 ms, the rate still holds, and a cut link heals.
func TestDelayLengthensTheRoundTrip(t *testing.T) {
	const delay = 15 * time.Millisecond
	tb := ForTest(t, 2, Link{Rate: "50mbit", Delay: delay})
	l := serve(t, tb.Hosts[0], 2<<20)
	dial := func() (net.Conn, time.Duration, error) {
		var conn net.Conn
		start := time.Now()
		err := tb.Hosts[1].Do(func() (err error) {
			conn, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
			return err
		})
		return conn, time.Since(start), err
	}
	for range 3 {
		conn, rtt, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		if rtt < 4*delay {
			t.Errorf("a handshake took %s; four delays are %s", rtt, 4*delay)
		}
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || len(got) != 2<<20 {
			t.Fatalf("received %d bytes (%v)", len(got), err)
		}
		t.Logf("handshake %s", rtt)
	}
	if err := tb.Cut(tb.Hosts[1]); err != nil {
		t.Fatal(err)
	}
	if conn, _, err := dial(); err == nil {
		conn.Close()
		t.Error("a cut host reached its peer")
	}
	if err := tb.Heal(tb.Hosts[1]); err != nil {
		t.Fatal(err)
	}
	conn, _, err := dial()
	if err != nil {
		t.Fatalf("after heal: %v", err)
	}
	conn.Close()
	if sent, err := tb.Sent(tb.Hosts[0]); err != nil || sent < 3*(2<<20) {
		t.Errorf("host 0 sent %d bytes (%v), want its three replies", sent, err)
	}
	if err := tb.Shape(tb.Hosts[0], Link{Rate: "10mbit"}); err == nil {
		t.Error("a link's delay changed after the testbed was built")
	}
}

// TestMulticastReachesEveryOtherHost: the switch floods a multicast
// datagram (mDNS's kind) to every host but its sender, the first one
// sent included.
func TestMulticastReachesEveryOtherHost(t *testing.T) {
	tb := ForTest(t, 3, Link{})
	group := &net.UDPAddr{IP: net.IPv4(239, 77, 0, 1), Port: 7777}
	conns := make([]*net.UDPConn, 2)
	for i, h := range tb.Hosts[1:] {
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName(device)
			if err != nil {
				return err
			}
			conns[i], err = net.ListenMulticastUDP("udp4", ifi, group)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	if err := tb.Hosts[0].Do(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(tb.Hosts[0].Addr)}, group)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 3 {
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s: %v", tb.Hosts[i+1].Name, err)
		}
		if n != 1 || buf[0] != 0 || from.IP.String() != tb.Hosts[0].Addr {
			t.Errorf("%s received %v from %s, want the first datagram from %s", tb.Hosts[i+1].Name, buf[:n], from, tb.Hosts[0].Addr)
		}
	}
}
