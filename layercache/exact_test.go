package layercache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// readExact reads [off, off+n) with ReadExact and checks the bytes and the
// io.EOF at the end, as checkRead does for ReadAt.
func readExact(t *testing.T, r *Reader, want []byte, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	got, err := r.ReadExact(context.Background(), p, off)
	end := min(off+int64(n), int64(len(want)))
	wantErr := error(nil)
	if off+int64(n) > int64(len(want)) {
		wantErr = io.EOF
	}
	if got != int(end-off) || err != wantErr {
		t.Fatalf("ReadExact(%d bytes at %d) of %d-byte blob: got n=%d err=%v, want n=%d err=%v", n, off, len(want), got, err, end-off, wantErr)
	}
	if !bytes.Equal(p[:got], want[off:end]) {
		t.Fatalf("ReadExact(%d bytes at %d): got bytes differ from the blob", n, off)
	}
}

func TestReadExact(t *testing.T) {
	const bs = 1024
	const size = 10*bs + 300
	tests := []struct {
		name    string
		warm    []span // read with ReadAt first (whole blocks get cached)
		off     int64
		n       int
		fetched []span // what ReadExact asks of the source
		cached  []int64
		partial []int64 // blocks touched but not cached
	}{
		{"small miss inside a block", nil, 3*bs + 10, 100, []span{{3*bs + 10, 100}}, nil, []int64{3}},
		{"miss across a block boundary", nil, 3*bs - 50, 100, []span{{3*bs - 50, 100}}, nil, []int64{2, 3}},
		{"whole blocks inside are kept", nil, bs + 1, 3 * bs, []span{{bs + 1, 3 * bs}}, []int64{2, 3}, []int64{1, 4}},
		{"the short last block is whole at the end", nil, 9*bs + 5, 2 * bs, []span{{9*bs + 5, size - 9*bs - 5}}, []int64{10}, []int64{9}},
		{"cached blocks: an ordinary read", []span{{2 * bs, 2 * bs}}, 2*bs + 7, 1500, nil, []int64{2, 3}, nil},
		{"one block missing: the exact range", []span{{2 * bs, bs}}, 2*bs + 7, 1500, []span{{2*bs + 7, 1500}}, []int64{2}, []int64{3}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(300+i), size, uint64(300+i))
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			for _, w := range tt.warm {
				checkRead(t, r, src.data, w.off, int(w.n))
			}
			before := len(src.spans())
			readExact(t, r, src.data, tt.off, tt.n)
			if got := src.spans()[before:]; !sameSpans(got, tt.fetched) {
				t.Errorf("source reads: got %v want %v", got, tt.fetched)
			}
			for _, i := range tt.cached {
				if !c.store.has(r.b, i, tierMemory) {
					t.Errorf("block %d: not cached, want cached", i)
				}
			}
			for _, i := range tt.partial {
				if c.store.has(r.b, i, tierMemory) {
					t.Errorf("block %d: cached from a partial range, want not", i)
				}
			}
			// What was kept is right: read everything back.
			readExact(t, r, src.data, 0, size)
			checkRead(t, r, src.data, 0, size)
		})
	}
}

// A failed or short exact fetch is an error and caches nothing.
func TestReadExactErrors(t *testing.T) {
	const bs = 1024
	errDown := errors.New("registry down")
	tests := []struct {
		name string
		hook func(ctx context.Context, off int64, n int) error
		want error
	}{
		{"source error", func(context.Context, int64, int) error { return errDown }, errDown},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(320+i), 8*bs, uint64(320+i))
			src.hook = tt.hook
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			if _, err := r.ReadExact(context.Background(), make([]byte, 3*bs), bs/2); !errors.Is(err, tt.want) {
				t.Fatalf("ReadExact: got %v want %v", err, tt.want)
			}
			if st := c.Stats(); st.SourceErrors != 1 || st.Memory.Blocks != 0 {
				t.Errorf("after a failed fetch: %d source errors, %d blocks cached; want 1 and 0", st.SourceErrors, st.Memory.Blocks)
			}
			src.hook = nil
			readExact(t, r, src.data, bs/2, 3*bs)
		})
	}

	t.Run("short read", func(t *testing.T) {
		src := &shortSource{newFakeSource(keyN(330), 8*bs, 330)}
		c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
		r := c.OpenWith(src, rangedOpts)
		defer r.Close()
		if _, err := r.ReadExact(context.Background(), make([]byte, 100), 50); !errors.Is(err, ErrShortRead) {
			t.Fatalf("ReadExact of a short source: got %v want %v", err, ErrShortRead)
		}
	})
	t.Run("bad offsets", func(t *testing.T) {
		src := newFakeSource(keyN(331), 8*bs, 331)
		c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
		r := c.OpenWith(src, rangedOpts)
		if _, err := r.ReadExact(context.Background(), make([]byte, 1), -1); err == nil {
			t.Errorf("ReadExact at -1: got no error")
		}
		if n, err := r.ReadExact(context.Background(), make([]byte, 1), 8*bs); n != 0 || err != io.EOF {
			t.Errorf("ReadExact at the end: got %d, %v want 0, EOF", n, err)
		}
		r.Close()
		if _, err := r.ReadExact(context.Background(), make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
			t.Errorf("ReadExact after Close: got %v want %v", err, ErrClosed)
		}
	})
}

// shortSource returns one byte less than asked, without an error.
type shortSource struct{ *fakeSource }

func (s *shortSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := s.fakeSource.ReadAt(ctx, p[:len(p)-1], off)
	return n, err
}

// Whole blocks an exact read fetched go to the disk tier: a new cache on
// the same directory serves them with no source read.
func TestReadExactWritesDisk(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	src := newFakeSource(keyN(340), 6*bs, 340)
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1, DiskDir: dir})
	r := c.OpenWith(src, rangedOpts)
	readExact(t, r, src.data, bs-1, 3*bs+2) // blocks 1-3 whole
	r.Close()
	c.Close()

	c2 := newTestCache(t, Options{BlockSize: bs, Readahead: -1, DiskDir: dir})
	r2 := c2.OpenWith(src, rangedOpts)
	defer r2.Close()
	before := len(src.spans())
	readExact(t, r2, src.data, bs, 3*bs)
	if got := src.spans()[before:]; len(got) != 0 {
		t.Errorf("source reads for blocks on disk: got %v want none", got)
	}
}
