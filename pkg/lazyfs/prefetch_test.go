package lazyfs

import (
	"reflect"
	"testing"
)

func TestRecorderListsFilesInFirstReadOrderWithMergedRanges(t *testing.T) {
	r := NewRecorder()
	r.note("bin/sh", 0, 4096)
	r.note("etc/ld.so.cache", 0, 100)
	r.note("bin/sh", 4096, 4096)    // sequential: extends
	r.note("bin/sh", 100000, 10)    // a jump: a new range
	r.note("bin/sh", 2000, 3000)    // inside the first
	r.note("bin/sh", 99990, 20)     // overlaps the jump, read later
	r.note("etc/ld.so.cache", 0, 0) // nothing read
	got := r.List()
	want := &PrefetchList{Files: []PrefetchFile{
		{Path: "bin/sh", Ranges: [][2]int64{{0, 8192}, {99990, 20}}},
		{Path: "etc/ld.so.cache", Ranges: [][2]int64{{0, 100}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func FuzzParsePrefetchList(f *testing.F) {
	f.Add([]byte(`{"files":[{"path":"bin/sh","ranges":[[0,4096]]}]}`))
	f.Add([]byte(`{"files":[{"path":"../x","ranges":[[0,1]]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParsePrefetchList(data)
		if err != nil {
			return
		}
		for _, file := range l.Files {
			if _, ok := cleanName(file.Path); !ok {
				t.Fatalf("accepted path %q", file.Path)
			}
			for _, r := range file.Ranges {
				if r[0] < 0 || r[1] <= 0 {
					t.Fatalf("accepted range %v", r)
				}
			}
		}
	})
}
