// Package pagebuf recycles the large, page-aligned buffers that a
// transfer's blocks are read into.
//
// A pull reads every byte of an image into memory once. Read into new
// allocations, a 95 MB blob grew the Go heap by some 50 MB of pages the
// process had never touched, and each first touch is a page fault: on a
// virtual machine, where a fault leaves the guest, the faults cost more
// than the hashing. Buffers taken from a Pool and put back when the last
// user is done are touched once per process, and a new buffer's pages
// are made present in one system call (populate) rather than a fault
// each. Page-aligned buffers can be written with O_DIRECT as they are,
// without a copy.
package pagebuf

import (
	"sync"
	"unsafe"
)

// Align is the alignment of every buffer the Pool makes: the page.
const Align = 4096

const (
	// minClass and maxClass bound the capacities recycled: powers of
	// two, from a small chunk up to the largest block a peer may send.
	// A buffer of less than minClass is not the Pool's: held in a class
	// of its own it would take many times its size (a blob of 8 KiB
	// leaves, a layer index's windows, held 64 KiB a leaf), and its few
	// pages cost little to fault in.
	minClass = 64 << 10
	maxClass = 2 << 20
	// keepBytes is what a Pool keeps of each capacity when nobody uses
	// it: more than a transfer holds at once (blocks read ahead, a batch
	// filling and one being written).
	keepBytes = 32 << 20
)

// A Pool hands out buffers and takes them back. It is safe for
// concurrent use. The zero Pool is ready.
type Pool struct {
	mu   sync.Mutex
	free map[int][][]byte // by capacity
	made int64
}

// Made is how many bytes of buffers the pool has allocated, recycled
// ones not counted again.
func (p *Pool) Made() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.made
}

// Get returns a buffer of n bytes, page-aligned if it is of minClass
// bytes or more. Its contents are whatever its last user left.
func (p *Pool) Get(n int) []byte {
	if n < minClass {
		return make([]byte, n)
	}
	c := class(n)
	if c == 0 {
		return Aligned(n)
	}
	p.mu.Lock()
	if free := p.free[c]; len(free) > 0 {
		b := free[len(free)-1]
		p.free[c] = free[:len(free)-1]
		p.mu.Unlock()
		return b[:n]
	}
	p.made += int64(c)
	p.mu.Unlock()
	b := Aligned(c)[:n]
	// Only the bytes asked for: a small block in a larger class leaves
	// the rest untouched, and not resident, until a larger one needs it.
	populate(b)
	return b
}

// Put takes back a buffer from Get. Nobody may use it after, not even
// through another slice of it.
func (p *Pool) Put(b []byte) {
	c := cap(b)
	if c == 0 || class(c) != c || !IsAligned(b[:1]) {
		return // not one of the pool's, or not whole: the collector takes it
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free == nil {
		p.free = map[int][][]byte{}
	}
	if (len(p.free[c])+1)*c <= keepBytes {
		p.free[c] = append(p.free[c], b[:c])
	}
}

// class is the capacity a buffer of n bytes is taken from, or 0 if
// buffers of that size are not recycled.
func class(n int) int {
	if n <= 0 || n > maxClass {
		return 0
	}
	c := minClass
	for c < n {
		c <<= 1
	}
	return c
}

// Aligned allocates n bytes starting on a page, capacity n, for a
// buffer that is not the pool's.
func Aligned(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align)) % Align
	return b[skip : skip+n : skip+n]
}

// IsAligned reports whether b starts on a page.
func IsAligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align == 0
}
