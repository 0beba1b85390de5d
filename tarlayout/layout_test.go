package tarlayout

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"
)

func reg(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0)}
}

// writeTar is what archive/tar writes for hdrs with contents.
func writeTar(t testing.TB, hdrs []*tar.Header, contents [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for i, h := range hdrs {
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(contents[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func contentOf(contents [][]byte) ContentFunc {
	return func(i int, p []byte, off int64) error {
		if off+int64(len(p)) > int64(len(contents[i])) {
			return io.ErrUnexpectedEOF
		}
		copy(p, contents[i][off:])
		return nil
	}
}

func TestOffsets(t *testing.T) {
	long := "blobs/sha256/" + string(bytes.Repeat([]byte("x"), 120)) // needs a PAX record
	for _, tc := range []struct {
		name    string
		hdrs    []*tar.Header
		content []int64 // ContentOffset of each member
		size    int64
	}{
		{"empty archive", nil, nil, 1024},
		{"one empty member", []*tar.Header{reg("a", 0)}, []int64{512}, 512 + 1024},
		{"one block", []*tar.Header{reg("a", 512)}, []int64{512}, 1024 + 1024},
		{"padding", []*tar.Header{reg("a", 1), reg("b", 513)}, []int64{512, 1536}, 512 + 512 + 512 + 1024 + 1024},
		{"directory then file", []*tar.Header{{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("d/f", 10)},
			[]int64{512, 1024}, 512 + 512 + 512 + 1024},
		{"long name", []*tar.Header{reg(long, 3)}, []int64{1536}, 1536 + 512 + 1024},
		{"past 8 GiB", []*tar.Header{reg("big", 9<<30), reg("after", 1)},
			[]int64{1536, 1536 + 9<<30 + 512}, 1536 + 9<<30 + 512 + 512 + 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.hdrs)
			if err != nil {
				t.Fatal(err)
			}
			if l.Size() != tc.size {
				t.Errorf("size: got %d, want %d", l.Size(), tc.size)
			}
			for i, want := range tc.content {
				if got := l.ContentOffset(i); got != want {
					t.Errorf("content offset of member %d: got %d, want %d", i, got, want)
				}
			}
		})
	}
}

func TestNegativeSize(t *testing.T) {
	if _, err := New([]*tar.Header{reg("a", -1)}); err == nil {
		t.Error("New with size -1: got no error")
	}
}

// TestReadOnlyTheRange: a read inside one member's content asks for those
// bytes alone; a read of headers and padding asks for none.
func TestReadOnlyTheRange(t *testing.T) {
	l, err := New([]*tar.Header{reg("a", 1000), reg("b", 5000)})
	if err != nil {
		t.Fatal(err)
	}
	type ask struct {
		i   int
		off int64
		n   int
	}
	for _, tc := range []struct {
		off  int64
		n    int
		want []ask
	}{
		{0, 512, nil},                     // a's header
		{600, 100, []ask{{0, 88, 100}}},   // inside a
		{1400, 200, []ask{{0, 888, 112}}}, // a's end and its padding
		{1600, 100, nil},                  // b's header
		{3000, 10, []ask{{1, 952, 10}}},
		{1000, 1200, []ask{{0, 488, 512}, {1, 0, 152}}},
		{l.Size() - 1024, 1024, nil}, // the trailer
	} {
		var got []ask
		p := make([]byte, tc.n)
		if _, err := l.ReadAt(p, tc.off, func(i int, p []byte, off int64) error {
			got = append(got, ask{i, off, len(p)})
			return nil
		}); err != nil {
			t.Fatalf("read %d at %d: %v", tc.n, tc.off, err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("read %d at %d: asked %v, want %v", tc.n, tc.off, got, tc.want)
			continue
		}
		for k := range got {
			if got[k] != tc.want[k] {
				t.Errorf("read %d at %d: asked %v, want %v", tc.n, tc.off, got, tc.want)
			}
		}
	}
}

func TestReadErrors(t *testing.T) {
	l, err := New([]*tar.Header{reg("a", 10)})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := l.ReadAt(make([]byte, 100), 500, func(int, []byte, int64) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("content error: got %v, want it wrapped", err)
	}
	if n, err := l.ReadAt(make([]byte, 100), l.Size()-10, contentOf([][]byte{make([]byte, 10)})); n != 10 || err != io.EOF {
		t.Errorf("read past the end: got %d %v, want 10 io.EOF", n, err)
	}
	if n, err := l.ReadAt(make([]byte, 1), l.Size(), nil); n != 0 || err != io.EOF {
		t.Errorf("read at the end: got %d %v, want 0 io.EOF", n, err)
	}
	if _, err := l.ReadAt(make([]byte, 1), -1, nil); err == nil {
		t.Error("read at -1: got no error")
	}
}

// FuzzReadEqualsArchiveTar: any read of a Layout's archive equals the
// same bytes of what archive/tar writes for the same members.
func FuzzReadEqualsArchiveTar(f *testing.F) {
	f.Add(int64(1), uint8(3), uint16(700), int64(0), uint16(4096))
	f.Add(int64(2), uint8(0), uint16(0), int64(5), uint16(1))
	f.Add(int64(3), uint8(8), uint16(3000), int64(1000), uint16(512))
	f.Fuzz(func(t *testing.T, seed int64, members uint8, maxSize uint16, off int64, n uint16) {
		rng := rand.New(rand.NewSource(seed))
		var hdrs []*tar.Header
		var contents [][]byte
		for i := 0; i < int(members%16); i++ {
			size := 0
			if maxSize > 0 {
				size = rng.Intn(int(maxSize) + 1)
			}
			b := make([]byte, size)
			rng.Read(b)
			name := "m" + string(rune('a'+i))
			if rng.Intn(4) == 0 {
				name = string(bytes.Repeat([]byte(name), 40)) // PAX path
			}
			hdrs = append(hdrs, reg(name, int64(size)))
			contents = append(contents, b)
		}
		want := writeTar(t, hdrs, contents)
		l, err := New(hdrs)
		if err != nil {
			t.Fatal(err)
		}
		if l.Size() != int64(len(want)) {
			t.Fatalf("size: got %d, want %d", l.Size(), len(want))
		}
		whole := make([]byte, l.Size())
		if k, err := l.ReadAt(whole, 0, contentOf(contents)); k != len(whole) || err != nil {
			t.Fatalf("read whole: got %d %v", k, err)
		}
		if !bytes.Equal(whole, want) {
			t.Fatal("whole archive differs from archive/tar's")
		}
		if off < 0 {
			off = -off
		}
		off %= l.Size() + 1
		p := make([]byte, n)
		k, err := l.ReadAt(p, off, contentOf(contents))
		end := min(off+int64(n), l.Size())
		if int64(k) != end-off || (err != nil && err != io.EOF) || (err == io.EOF) != (off+int64(n) > l.Size()) {
			t.Fatalf("read %d at %d of %d: got %d %v", n, off, l.Size(), k, err)
		}
		if !bytes.Equal(p[:k], want[off:end]) {
			t.Fatalf("read %d at %d: bytes differ from archive/tar's", n, off)
		}
	})
}
