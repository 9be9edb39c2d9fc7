package batch

import (
	"errors"
	"slices"
	"testing"
)

func TestWritesInOrderAndReportsFailures(t *testing.T) {
	var got []int
	var calls int
	w := New(10, func(int) int { return 4 }, func(xs []int) error {
		calls++
		got = append(got, xs...)
		return nil
	})
	for i := range 7 {
		if err := w.Add(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6}; !slices.Equal(got, want) || calls != 3 {
		t.Fatalf("wrote %v in %d batches, want %v in 3", got, calls, want)
	}

	boom := errors.New("boom")
	w = New(1, func(int) int { return 1 }, func([]int) error { return boom })
	if err := w.Add(1); err != nil {
		t.Fatalf("first Add: %v (its batch is still being written)", err)
	}
	if err := w.Add(2); !errors.Is(err, boom) {
		t.Fatalf("second Add: %v, want the first batch's error", err)
	}
}
