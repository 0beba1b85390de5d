package layercache

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// streamingSource gives fakeSource a working Open; mangle, when set,
// replaces the stream of the first Open.
type streamingSource struct {
	*fakeSource
	opens  int
	mangle func(r io.Reader) (io.ReadCloser, error)
}

func (s *streamingSource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	s.calls.Add(1)
	s.mu.Lock()
	s.reads = append(s.reads, span{off, n})
	s.opens++
	first := s.opens == 1
	s.mu.Unlock()
	if s.hook != nil {
		if err := s.hook(ctx, off, int(n)); err != nil {
			return nil, err
		}
	}
	r := bytes.NewReader(s.data[off : off+n])
	if first && s.mangle != nil {
		return s.mangle(r)
	}
	return io.NopCloser(r), nil
}

var _ blobio.Source = (*streamingSource)(nil)

func TestStreamSourceExactBytesAndRuns(t *testing.T) {
	const bs = 1024
	src := &streamingSource{fakeSource: newFakeSource(keyN(70), 20*bs+333, 70)}
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1, MaxFetchBlocks: 32, MaxParallel: 8})
	r := c.Open(src)
	defer r.Close()
	checkRead(t, r, src.data, 3*bs, 1)             // block 3 alone: ReadAt
	checkRead(t, r, src.data, 0, int(r.Size())+10) // runs 0-2 and 4-20: two Opens
	want := []span{{3 * bs, bs}, {0, 3 * bs}, {4 * bs, r.Size() - 4*bs}}
	if got := src.spans(); !sameSpans(got, want) {
		t.Errorf("source reads: got %v want %v", got, want)
	}
	rnd := rand.New(rand.NewPCG(70, 70))
	for i := 0; i < 200; i++ {
		checkRead(t, r, src.data, rnd.Int64N(r.Size()), 1+rnd.IntN(4*bs))
	}
	if st := c.Stats(); st.BytesFetched != r.Size() || st.SourceRequests != 3 {
		t.Errorf("stats: got %d bytes in %d requests want %d in 3", st.BytesFetched, st.SourceRequests, r.Size())
	}
}

type failingReader struct {
	r     io.Reader
	after int
	err   error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.after)]
	n, err := f.r.Read(p)
	f.after -= n
	return n, err
}

func (f *failingReader) Close() error { return nil }

// A failed stream caches only the blocks that arrived whole before the
// failure (they were already served), never the block it broke in, and
// none at all of a whole-blob stream, which a verifying Source fails only
// at its end.
func TestStreamSourceErrorsAreNotCached(t *testing.T) {
	const bs = 1024
	tests := []struct {
		name       string
		mangle     func(r io.Reader) (io.ReadCloser, error)
		off, n     int64 // the read: blocks 1-4 (ranged), or 0-5 (the whole blob)
		wantIs     error
		wantCached int64
	}{
		{"open fails", func(io.Reader) (io.ReadCloser, error) { return nil, errBoom }, bs, 4 * bs, errBoom, 0},
		{"stream ends early", func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(io.LimitReader(r, 2*bs+7)), nil
		}, bs, 4 * bs, ErrShortRead, 2},
		{"stream fails midway", func(r io.Reader) (io.ReadCloser, error) {
			return &failingReader{r: r, after: bs + 1, err: errBoom}, nil
		}, bs, 4 * bs, errBoom, 1},
		{"stream empty", func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}, bs, 4 * bs, ErrShortRead, 0},
		{"error at the end of a span", func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(r, &failingReader{err: errBoom})), nil
		}, bs, 4 * bs, errBoom, 3},
		{"error at the end of the whole blob (digest mismatch)", func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(r, &failingReader{err: errBoom})), nil
		}, 0, 6 * bs, errBoom, 0},
		{"stream too long", func(r io.Reader) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(r, bytes.NewReader([]byte("x")))), nil
		}, bs, 4 * bs, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &streamingSource{fakeSource: newFakeSource(keyN(71), 6*bs, 71), mangle: tt.mangle}
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
			r := c.Open(src)
			defer r.Close()
			_, err := r.ReadAt(context.Background(), make([]byte, tt.n), tt.off)
			if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || errors.Is(err, io.EOF) {
				t.Fatalf("ReadAt: got err %v want errors.Is %v (and not io.EOF)", err, tt.wantIs)
			}
			waitIdle(t, c)
			if st := c.Stats(); st.Memory.Blocks != tt.wantCached || st.SourceErrors != 1 {
				t.Errorf("after the failure: got %d cached blocks, %d source errors; want %d and 1", st.Memory.Blocks, st.SourceErrors, tt.wantCached)
			}
			checkRead(t, r, src.data, tt.off, int(tt.n))
			if got := src.calls.Load(); got != 2 {
				t.Errorf("source calls: got %d want 2", got)
			}
		})
	}
}
