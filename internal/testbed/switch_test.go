package testbed

import (
	"encoding/binary"
	"testing"
	"time"
)

func TestLinkRateReadsTCsUnits(t *testing.T) {
	for in, want := range map[string]int64{
		"":        0,
		"100mbit": 100e6,
		"1gbit":   1e9,
		"1.5Mbit": 1.5e6,
		"64kbit":  64e3,
		"10mbps":  80e6,
		"1mibit":  1 << 20,
		"8000":    8000,
	} {
		got, err := Link{Rate: in}.rate()
		if err != nil || got != want {
			t.Errorf("rate %q: %d (%v), want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"fast", "mbit", "-1mbit", "0mbit", "1e30bit"} {
		if _, err := (Link{Rate: in}).rate(); err == nil {
			t.Errorf("rate %q accepted", in)
		}
	}
	if _, err := (Link{Delay: 2 * time.Second}).rate(); err == nil {
		t.Error("a delay of 2 s accepted")
	}
}

// TestWireBytesCountsEverySegmentsHeaders: a packet the sender left for
// the device to cut takes its headers once per segment on the wire.
func TestWireBytesCountsEverySegmentsHeaders(t *testing.T) {
	frame := func(gsoType byte, hdrLen, gsoSize, size int) []byte {
		f := make([]byte, vnetHeaderSize+size)
		f[1] = gsoType
		binary.LittleEndian.PutUint16(f[2:], uint16(hdrLen))
		binary.LittleEndian.PutUint16(f[4:], uint16(gsoSize))
		return f
	}
	const tcpv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	for _, tc := range []struct {
		f    []byte
		want int64
	}{
		{frame(0, 0, 0, 1514), 1514},                               // a plain frame
		{frame(tcpv4, 66, 1448, 66+4*1448), 66 + 4*1448 + 3*66},    // four segments
		{frame(tcpv4, 66, 1448, 66+1448+1), 66 + 1449 + 66},        // two, the last of one byte
		{frame(tcpv4|0x80, 66, 1448, 66+2*1448), 66 + 2*1448 + 66}, // with ECN
	} {
		if got := wireBytes(tc.f); got != tc.want {
			t.Errorf("frame of %d bytes: %d on the wire, want %d", len(tc.f)-vnetHeaderSize, got, tc.want)
		}
	}
}
