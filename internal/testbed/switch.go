package testbed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Every host has one TAP device, and this process is the switch between
// them: it reads each frame a host sends from the host's device and
// writes it into the device of the host it is for, after the path's
// delay and as fast as that host's download rate lets it in. The kernel
// shapes each host's upload (tbf on its device) and drops its share of
// loss (nftables); the switch adds what some kernels lack (netem, for
// delay) and what a qdisc cannot do on a device's way in (the download
// rate). A frame crosses user space once on its way: an earlier testbed
// joined TAP pairs through a bridge, with a delay line on each side,
// and spent a third of two cores carrying nine busy hosts' frames twice.
//
// The devices take segmentation offloads, as a virtual machine's NIC
// does: a TCP sender hands its device one packet of up to gsoMaxSize
// bytes (a virtio header says how to cut it), the switch carries it
// whole, and the receiving stack takes it as one, as it would after GRO.

// Flags of TUNSETOFFLOAD (linux/if_tun.h), not in x/sys/unix.
const (
	tunOffloadCsum = 0x01
	tunOffloadTSO4 = 0x02
	tunOffloadTSO6 = 0x04
	tunOffloadUSO4 = 0x20 // Linux 6.2 and later
	tunOffloadUSO6 = 0x40
)

// gsoMaxSize caps the packets a sender hands its device: tbf cuts a
// packet larger than its burst (64 KiB, with the headers of every segment
// counted) back into frames of the MTU.
const gsoMaxSize = 32 << 10

// burst is how many bytes a link passes at once after a pause, as tbf's
// burst does on the way out.
const burst = 64 << 10

// queueLimit is how long a frame may wait for a host's download rate
// before it is dropped, as tbf's latency bounds its queue.
const queueLimit = 50 * time.Millisecond

// vnetHeaderSize is the virtio_net_hdr in front of every frame read from
// or written to a device opened with IFF_VNET_HDR.
const vnetHeaderSize = 10

// Frames are read into a buffer that fits the largest (a virtio header,
// an Ethernet header and a packet of up to 64 KiB), then copied into one
// of two sizes: most frames are acknowledgements.
const (
	maxFrame   = vnetHeaderSize + 14 + 64<<10
	smallFrame = 2048
)

// maxInFlight bounds the bytes on their way to one host; beyond it frames
// are dropped, as a full queue drops them. At 1 Gbit/s and 100 ms 12.5 MB
// are in flight.
const maxInFlight = 32 << 20

// early is how much before its time a frame may leave, so that a burst
// of frames leaves on one wakeup rather than one each: nine hosts at
// 100 Mbit/s send tens of thousands of frames a second.
const early = 250 * time.Microsecond

// macPrefix starts the address of every host's device; the last two
// bytes are the host's index, so that the switch finds a frame's port by
// its destination.
var macPrefix = [4]byte{0x02, 0x77, 0x00, 0x00}

func hostMAC(i int) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", macPrefix[0], macPrefix[1], macPrefix[2], macPrefix[3], i>>8, i&0xff)
}

// openTAP makes a TAP device called name in network namespace ns and
// returns the file its frames are read from and written to. The file is
// non-blocking, so that closing it ends a read in progress.
func openTAP(ns, name string) (*os.File, error) {
	var f *os.File
	err := Host{Name: ns}.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("testbed: /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("testbed: TAP device %s: %w", name, err)
		}
		offloads := tunOffloadCsum | tunOffloadTSO4 | tunOffloadTSO6
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads|tunOffloadUSO4|tunOffloadUSO6) != nil {
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
				unix.Close(fd)
				return fmt.Errorf("testbed: offloads of TAP device %s: %w", name, err)
			}
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ip("-n", ns, "link", "set", "dev", name, "gso_max_size", strconv.Itoa(gsoMaxSize)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// port is one host's place on the switch.
type port struct {
	dev      *os.File
	cut      atomic.Bool
	sent     atomic.Uint64 // bytes of the frames the host sent
	rate     atomic.Int64  // the host's download rate in bits a second; 0: unshaped
	queue    chan frame    // frames on their way to the host
	inFlight atomic.Int64  // bytes in queue
}

type frame struct {
	due  time.Time
	data []byte
}

// fabric is the switch: the hosts' ports, and the one-way delay of every
// path between two of them.
type fabric struct {
	ports      []*port
	delay      time.Duration
	pool       framePool
	receivers  sync.WaitGroup
	deliverers sync.WaitGroup
}

// start carries frames between the ports until close.
func (s *fabric) start() {
	s.pool = framePool{small: make(chan []byte, 4096), large: make(chan []byte, 512)}
	for _, p := range s.ports {
		p.queue = make(chan frame, 1<<14)
	}
	for i, p := range s.ports {
		s.receivers.Go(func() { s.receive(i, p) })
		s.deliverers.Go(func() { s.deliver(p) })
	}
}

// receive reads the frames host i sends and queues each for the port it
// is addressed to, or every other port for a broadcast or multicast.
func (s *fabric) receive(i int, from *port) {
	read := make([]byte, maxFrame)
	for {
		n, err := from.dev.Read(read)
		if err != nil {
			return // closed
		}
		if n < vnetHeaderSize+14 || from.cut.Load() {
			continue // a cut host's frames go nowhere
		}
		from.sent.Add(uint64(n - vnetHeaderSize))
		due := time.Now().Add(s.delay)
		dst := read[vnetHeaderSize : vnetHeaderSize+6]
		if dst[0]&1 != 0 { // broadcast or multicast: flood
			for j, p := range s.ports {
				if j != i {
					s.enqueue(p, due, read[:n])
				}
			}
			continue
		}
		if [4]byte(dst[:4]) != macPrefix {
			continue
		}
		if j := int(binary.BigEndian.Uint16(dst[4:])); j < len(s.ports) && j != i {
			s.enqueue(s.ports[j], due, read[:n])
		}
	}
}

func (s *fabric) enqueue(to *port, due time.Time, data []byte) {
	if to.cut.Load() || to.inFlight.Load()+int64(len(data)) > maxInFlight {
		return // unplugged, or the queue is full: the frame is lost
	}
	f := frame{due: due, data: s.pool.get(len(data))}
	copy(f.data, data)
	select {
	case to.queue <- f:
		to.inFlight.Add(int64(len(data)))
	default:
		s.pool.put(f.data)
	}
}

// deliver writes the frames queued for a host into its device, each once
// its delay has passed and the host's download rate lets it in.
func (s *fabric) deliver(to *port) {
	var free time.Time // when the download link is next idle
	for f := range to.queue {
		to.inFlight.Add(-int64(len(f.data)))
		at := f.due
		if rate := to.rate.Load(); rate > 0 {
			free = later(free, f.due.Add(-time.Duration(burst*8*int64(time.Second)/rate)))
			at = later(at, free)
			if at.Sub(f.due) > queueLimit {
				s.pool.put(f.data) // the queue is full: dropped
				continue
			}
			free = free.Add(time.Duration(wireBytes(f.data) * 8 * int64(time.Second) / rate))
		}
		if wait := time.Until(at); wait > early {
			time.Sleep(wait - early)
		}
		if !to.cut.Load() {
			// A closed device refuses the frame: the testbed is closing.
			_, _ = to.dev.Write(f.data)
		}
		s.pool.put(f.data)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// wireBytes is what a frame takes on the wire: a packet the sender left
// for the device to segment carries its headers once per segment.
func wireBytes(data []byte) int64 {
	n := int64(len(data) - vnetHeaderSize)
	gsoType := data[1] &^ 0x80 // VIRTIO_NET_HDR_GSO_ECN
	hdrLen := int64(binary.LittleEndian.Uint16(data[2:]))
	gsoSize := int64(binary.LittleEndian.Uint16(data[4:]))
	if gsoType == 0 || gsoSize == 0 || n <= hdrLen {
		return n
	}
	segments := (n - hdrLen + gsoSize - 1) / gsoSize
	return n + (segments-1)*hdrLen
}

// close stops the switch and closes the devices' files, which removes
// the devices.
func (s *fabric) close() error {
	var errs []error
	for _, p := range s.ports {
		if err := p.dev.Close(); err != nil {
			errs = append(errs, fmt.Errorf("testbed: close %s: %w", p.dev.Name(), err))
		}
	}
	// Each port's reader returns once its device is closed; then nothing
	// queues frames any more, and the deliverers can drain and stop.
	s.receivers.Wait()
	for _, p := range s.ports {
		if p.queue != nil { // started
			close(p.queue)
		}
	}
	s.deliverers.Wait()
	return errors.Join(errs...)
}

// framePool keeps frame buffers of two sizes for reuse.
type framePool struct{ small, large chan []byte }

func (fp *framePool) get(n int) []byte {
	pool, size := fp.small, smallFrame
	if n > smallFrame {
		pool, size = fp.large, maxFrame
	}
	select {
	case b := <-pool:
		return b[:n]
	default:
		return make([]byte, n, size)
	}
}

func (fp *framePool) put(b []byte) {
	pool := fp.small
	if cap(b) > smallFrame {
		pool = fp.large
	}
	select {
	case pool <- b:
	default:
	}
}
