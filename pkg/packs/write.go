package packs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/shoal-ipfs/shoal/internal/durable"
	"github.com/shoal-ipfs/shoal/internal/pagebuf"
)

// A Writer writes its leaves one of two ways: copied into the page cache
// (os.File.WriteAt), or, with DirectWhenFaster, straight to the disk with
// O_DIRECT where they are aligned. Which is faster depends on the machine
// and changes while it runs, so the writer times both and uses the faster.

// directAlign is the alignment O_DIRECT asks of a write's memory, place
// and length: the page, which no disk's logical block exceeds in practice.
// A file system asking more refuses the write, and the writer goes back
// to the page cache.
const directAlign = pagebuf.Align

const (
	// probeBytes is how much a probe writes: enough to time a way, little
	// enough that trying the slow way costs little.
	probeBytes = 2 << 20
	// retryEvery is how many writes the faster way makes before the
	// other is tried again.
	retryEvery = 8
)

// minTimedBytes is the least a write must carry to be timed: the time of
// a smaller one is mostly fixed costs.
const minTimedBytes = 1 << 20

// writeWays times the two ways of writing. A Store's writers share one:
// the speeds are the machine's.
type writeWays struct {
	mu             sync.Mutex
	cached, direct float64 // bytes per second when last timed; 0 if never
	writes         int
}

// pick says which way to write next, and whether the write is a probe:
// each way is tried once, then the faster one is used, and the other
// tried again every retryEvery writes.
func (t *writeWays) pick() (direct, probe bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.cached == 0:
		return false, true
	case t.direct == 0:
		return true, true
	}
	t.writes++
	directFaster := t.direct > t.cached
	if t.writes%retryEvery == 0 {
		return !directFaster, true
	}
	return directFaster, false
}

// record times a write made one way. A write whose leaves mostly went the
// other way (unaligned ones go through the cache) does not count.
func (t *writeWays) record(direct bool, directBytes, cachedBytes int, d time.Duration) {
	n := cachedBytes
	if direct {
		n = directBytes
	}
	if n < minTimedBytes || 2*n < directBytes+cachedBytes || d <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rate := float64(directBytes+cachedBytes) / d.Seconds()
	if direct {
		t.direct = rate
	} else {
		t.cached = rate
	}
}

// writeLeaves writes leaves one after another at the end of the pack.
func (w *Writer) writeLeaves(leaves [][]byte) error {
	for len(leaves) > 0 {
		direct, n := false, len(leaves)
		if w.direct != nil {
			var probe bool
			direct, probe = w.s.ways.pick()
			if probe {
				n = 0
				for size := 0; n < len(leaves) && size < probeBytes; n++ {
					size += len(leaves[n])
				}
			}
		}
		start := time.Now()
		directBytes, cachedBytes, err := w.write(leaves[:n], direct)
		if err != nil {
			return err
		}
		if w.direct != nil {
			w.s.ways.record(direct, directBytes, cachedBytes, time.Since(start))
		}
		leaves = leaves[n:]
	}
	return nil
}

// write writes leaves at the end of the pack, with O_DIRECT if direct and
// where they are aligned, and says how many bytes went each way.
func (w *Writer) write(leaves [][]byte, direct bool) (directBytes, cachedBytes int, err error) {
	var run [][]byte // aligned leaves, to write directly in one call
	runOff := w.off
	flush := func() error {
		n, err := w.writeDirect(run, runOff)
		directBytes += n
		run, w.staged = run[:0], 0
		return err
	}
	for _, data := range leaves {
		if direct && w.direct != nil && placeAligned(w.off, len(data)) {
			out := data
			if !pagebuf.IsAligned(data) {
				out = w.stage(data)
				if out == nil && len(run) > 0 {
					if err := flush(); err != nil {
						return directBytes, cachedBytes, err
					}
					out = w.stage(data)
				}
			}
			if out != nil {
				if len(run) == 0 {
					runOff = w.off
				}
				run = append(run, out)
				w.off += int64(len(out))
				continue
			}
		}
		if err := flush(); err != nil {
			return directBytes, cachedBytes, err
		}
		if _, err := w.f.WriteAt(data, w.off); err != nil {
			return directBytes, cachedBytes, err
		}
		cachedBytes += len(data)
		w.off += int64(len(data))
	}
	return directBytes, cachedBytes, flush()
}

// flushEvery is how much a pack grows between the flushes its writer
// starts. A pin waits until its packs are on the disk; flushed in the
// background as they are written, most of a pack is there before the pin
// asks, and the pin waits for the tail only. A flush reaches the disk's
// own cache too (fdatasync, not only the page cache's writeback): a VM's
// host holds the guest's writes, direct ones included, until the guest
// flushes, and a 95 MB pack written directly took 60-100 ms to flush at
// the pin, 0.1 ms after flushes every 8 MiB.
const flushEvery = 8 << 20

// flusher flushes a pack to the disk in the background as it is
// written: a flush each flushEvery bytes, one at a time. Its writer
// serialises the calls (a Writer has one user; a PlacedWriter holds its
// lock).
type flusher struct {
	f       *os.File
	name    string
	files   *durable.Files // the store's, told of a flush that failed
	written int64          // bytes written since the last flush began
	pending chan error     // the result of the flush under way, if any
	err     error          // the error of a flush that failed
}

// wrote notes n more bytes written to the pack and starts a flush if one
// is due and none is under way. It returns the error of a flush that
// failed: the pack's bytes may not be on the disk, and a later sync of
// the file would not say so (the kernel reports a write-back error
// once), so the store is told too (durable.Files.Failed).
func (fl *flusher) wrote(n int64) error {
	fl.written += n
	if fl.err != nil {
		return fl.err
	}
	if fl.pending != nil {
		select {
		case fl.err = <-fl.pending:
			fl.pending = nil
			if fl.err != nil {
				return fl.err
			}
		default:
			return nil
		}
	}
	if fl.written < flushEvery {
		return nil
	}
	fl.written = 0
	done := make(chan error, 1)
	fl.pending = done
	f, name, files := fl.f, fl.name, fl.files
	go func() {
		err := dataSync(f)
		if err != nil {
			err = fmt.Errorf("packs: flush %s: %w", name, err)
			files.Failed(f.Name(), err)
		}
		done <- err
	}()
	return nil
}

// wait waits for the flush under way, if any, and returns the error of
// any that failed.
func (fl *flusher) wait() error {
	if fl.pending != nil {
		if err := <-fl.pending; err != nil {
			fl.err = err
		}
		fl.pending = nil
	}
	return fl.err
}

// stageBytes is the size of a writer's staging buffer, where leaves whose
// memory is not aligned are copied to be written directly (a pull's
// leaves lie in a CAR stream's sections, after their CIDs).
const stageBytes = 4 << 20

// stage copies data into the staging buffer and returns the copy, or nil
// if it does not fit in what is left.
func (w *Writer) stage(data []byte) []byte {
	if w.stageBuf == nil {
		w.stageBuf = pagebuf.Aligned(stageBytes)
	}
	if w.staged+len(data) > len(w.stageBuf) {
		return nil
	}
	out := w.stageBuf[w.staged : w.staged+len(data) : w.staged+len(data)]
	copy(out, data)
	w.staged += len(data)
	return out
}

// placeAligned reports whether n bytes at off in a file can be written
// directly.
func placeAligned(off int64, n int) bool { return off%directAlign == 0 && n%directAlign == 0 }

// writeDirect writes run at off around the page cache, and returns how
// many bytes went that way. If the file system refuses, the run goes
// through the cache, and so does every write after it.
func (w *Writer) writeDirect(run [][]byte, off int64) (int, error) {
	written := 0
	for len(run) > 0 {
		n, err := writeDirect(w.direct, run, off)
		if errors.Is(err, errRefused) {
			// A direct write is on the disk when it returns: closing
			// loses nothing.
			_ = w.direct.Close()
			w.direct = nil
			for _, b := range run {
				if _, err := w.f.WriteAt(b, off); err != nil {
					return written, err
				}
				off += int64(len(b))
			}
			return written, nil
		}
		if err != nil {
			return written, err
		}
		if n == 0 {
			return written, io.ErrShortWrite
		}
		off += int64(n)
		written += n
		for n > 0 {
			if n < len(run[0]) {
				run[0] = run[0][n:]
				break
			}
			n -= len(run[0])
			run = run[1:]
		}
	}
	return written, nil
}
