package layercache

import (
	"bytes"
	"context"
	"io"
	"testing"
)

func TestSlices(t *testing.T) {
	const bs = 1024
	src := newFakeSource(keyN(90), 5*bs+100, 90)
	size := int64(len(src.data))
	tests := []struct {
		name       string
		off        int64
		n          int
		wantN      int
		wantEOF    bool
		wantSlices int
	}{
		{"inside one block", 10, 100, 100, false, 1},
		{"one whole block", bs, bs, bs, false, 1},
		{"across three blocks", bs - 1, bs + 2, bs + 2, false, 3},
		{"to the end exactly", size - 50, 50, 50, false, 1},
		{"past the end", size - 50, 200, 50, true, 1},
		{"the whole blob and more", 0, int(size) + 1, int(size), true, 6},
		{"empty", 7, 0, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, Options{BlockSize: bs})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			vec, release, err := r.Slices(context.Background(), tt.off, tt.n)
			defer release()
			if (err == io.EOF) != tt.wantEOF || (err != nil && err != io.EOF) {
				t.Fatalf("Slices(%d, %d): got err %v want EOF %v", tt.off, tt.n, err, tt.wantEOF)
			}
			got := bytes.Join(vec, nil)
			if len(got) != tt.wantN || !bytes.Equal(got, src.data[tt.off:tt.off+int64(tt.wantN)]) {
				t.Errorf("Slices(%d, %d): got %d bytes (equal: %v) want %d", tt.off, tt.n, len(got), bytes.Equal(got, src.data[tt.off:tt.off+int64(len(got))]), tt.wantN)
			}
			if len(vec) != tt.wantSlices {
				t.Errorf("Slices(%d, %d): got %d slices want %d", tt.off, tt.n, len(vec), tt.wantSlices)
			}
			for i, v := range vec {
				if cap(v) != len(v) {
					t.Errorf("slice %d: got cap %d want %d (an append must not write into the block)", i, cap(v), len(v))
				}
			}
		})
	}
	c := newTestCache(t, Options{BlockSize: bs})
	r := c.OpenWith(src, rangedOpts)
	for _, tt := range []struct {
		off int64
		n   int
	}{{-1, 10}, {0, -1}} {
		_, release, err := r.Slices(context.Background(), tt.off, tt.n)
		release()
		if err == nil || err == io.EOF {
			t.Errorf("Slices(%d, %d): got err %v want an error", tt.off, tt.n, err)
		}
	}
	_, release, err := r.Slices(context.Background(), size, 10)
	release()
	if err != io.EOF {
		t.Errorf("Slices at the end: got err %v want io.EOF", err)
	}
	r.Close()
	_, release, err = r.Slices(context.Background(), 0, 10)
	release()
	if err != ErrClosed {
		t.Errorf("Slices after Close: got err %v want ErrClosed", err)
	}
}
