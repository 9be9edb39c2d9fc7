// Package batch groups items into large writes, each written in the
// background while the next fills, one at a time and in order.
package batch

// Writer batches items for write. It is not safe for concurrent use.
type Writer[T any] struct {
	write    func([]T) error
	size     func(T) int
	limit    int
	items    []T
	bytes    int
	inflight chan error // result of the batch being written, if any
}

// New returns a Writer that starts writing a batch once its items' sizes
// reach limit bytes.
func New[T any](limit int, size func(T) int, write func([]T) error) *Writer[T] {
	return &Writer[T]{write: write, size: size, limit: limit}
}

// BlockBytes is how many bytes of blocks a batch of blocks holds: large
// enough that a store takes them in few calls, small enough that the
// writing overlaps the hashing of the next ones.
const BlockBytes = 8 << 20

// NewBlocks returns a Writer of blocks (or DAG nodes) in batches of
// BlockBytes of data.
func NewBlocks[T interface{ RawData() []byte }](write func([]T) error) *Writer[T] {
	return New(BlockBytes, func(b T) int { return len(b.RawData()) }, write)
}

// Add queues x, and starts writing the batch if it is full; it returns the
// error of the batch written before, if that failed.
func (w *Writer[T]) Add(x T) error {
	w.items = append(w.items, x)
	w.bytes += w.size(x)
	if w.bytes < w.limit {
		return nil
	}
	if err := w.Wait(); err != nil {
		return err
	}
	items := w.items
	w.items, w.bytes = nil, 0
	w.inflight = make(chan error, 1)
	go func(done chan<- error) { done <- w.write(items) }(w.inflight)
	return nil
}

// Wait waits for the batch being written in the background.
func (w *Writer[T]) Wait() error {
	if w.inflight == nil {
		return nil
	}
	err := <-w.inflight
	w.inflight = nil
	return err
}

// Flush writes everything queued before returning.
func (w *Writer[T]) Flush() error {
	if err := w.Wait(); err != nil {
		return err
	}
	if len(w.items) == 0 {
		return nil
	}
	items := w.items
	w.items, w.bytes = nil, 0
	return w.write(items)
}
