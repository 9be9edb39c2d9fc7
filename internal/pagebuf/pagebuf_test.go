package pagebuf

import (
	"testing"
	"unsafe"
)

func TestGetIsAlignedAndSized(t *testing.T) {
	var p Pool
	for _, n := range []int{minClass, 256 << 10, 256<<10 + 1, 1 << 20, 2 << 20, 3 << 20} {
		b := p.Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d) has %d bytes", n, len(b))
		}
		if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align != 0 {
			t.Fatalf("Get(%d) is not page-aligned", n)
		}
	}
}

// A small buffer takes its own size, not a class's: a blob of small
// leaves read ahead and batched must not hold 64 KiB a leaf.
func TestSmallBuffersAreTheirSizeAndNotRecycled(t *testing.T) {
	var p Pool
	for _, n := range []int{1, 4096, 8 << 10, minClass - 1} {
		b := p.Get(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("Get(%d): %d bytes, capacity %d; want both %d", n, len(b), cap(b), n)
		}
		p.Put(b)
	}
	if p.Made() != 0 || len(p.free) != 0 {
		t.Fatalf("the pool made %d bytes and keeps %d classes for small buffers", p.Made(), len(p.free))
	}
}

func TestPutBufferComesBack(t *testing.T) {
	var p Pool
	b := p.Get(256 << 10)
	b[0] = 7
	p.Put(b)
	again := p.Get(200 << 10)
	if unsafe.SliceData(again) != unsafe.SliceData(b) {
		t.Fatal("a buffer put back was not handed out again")
	}
	if other := p.Get(200 << 10); unsafe.SliceData(other) == unsafe.SliceData(b) {
		t.Fatal("one buffer handed out twice")
	}
}

func TestPutIgnoresForeignAndPartBuffers(t *testing.T) {
	var p Pool
	p.Put(make([]byte, 100))
	b := p.Get(256 << 10)
	p.Put(b[4096:]) // a part of a buffer: not the pool's to take
	if len(p.free[256<<10]) != 0 {
		t.Fatal("the pool kept a buffer that is not one of its own")
	}
}

func TestPoolKeepsABoundedAmount(t *testing.T) {
	var p Pool
	var bs [][]byte
	for range 2 * keepBytes / (1 << 20) {
		bs = append(bs, p.Get(1<<20))
	}
	for _, b := range bs {
		p.Put(b)
	}
	if kept := len(p.free[1<<20]) << 20; kept > keepBytes {
		t.Fatalf("the pool keeps %d bytes, more than %d", kept, keepBytes)
	}
}

func TestLargeBuffersAreNotRecycled(t *testing.T) {
	var p Pool
	b := p.Get(maxClass + 1)
	p.Put(b)
	if len(p.free) != 0 {
		t.Fatal("a buffer larger than the largest class was kept")
	}
}
