package progress

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestNoBarsOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	if New(&buf, "x") != nil {
		t.Fatal("a bar on a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := New(f, "x")
	if b != nil {
		t.Fatal("a bar on a regular file")
	}
	// A nil bar is a valid no-op.
	b.AddTotal(10)
	b.Add(5)
	b.Done()
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatal("wrote to a file that is not a terminal")
	}
}
