package layercache

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeSource is an in-memory blob that counts and records the ranged reads
// the cache sends it. hook, when set, runs before each read and may block
// or fail it.
type fakeSource struct {
	key    string
	data   []byte
	origin blobio.Origin // zero: local, trusted by key
	hook   func(ctx context.Context, off int64, n int) error

	calls atomic.Int64
	mu    sync.Mutex
	reads []span
}

type span struct{ off, n int64 }

func newFakeSource(key string, size int, seed uint64) *fakeSource {
	return &fakeSource{key: key, data: randomBytes(size, seed)}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// rangedOpts opens a fakeSource, which has no stream of its own.
var rangedOpts = OpenOptions{Ranged: true}

func (s *fakeSource) Key() string { return s.key }

func (s *fakeSource) Origin() blobio.Origin { return s.origin }

// Open fails: a fakeSource stands for a blob read by ranges only
// (OpenOptions.Ranged); streamingSource streams.
func (s *fakeSource) Open(context.Context, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("fakeSource: opened without OpenOptions.Ranged")
}
func (s *fakeSource) Size() int64 { return int64(len(s.data)) }

func (s *fakeSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.calls.Add(1)
	s.mu.Lock()
	s.reads = append(s.reads, span{off, int64(len(p))})
	s.mu.Unlock()
	if s.hook != nil {
		if err := s.hook(ctx, off, len(p)); err != nil {
			return 0, err
		}
	}
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *fakeSource) spans() []span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]span(nil), s.reads...)
}

// quietLogger keeps expected warnings (corrupt files) out of test output.
func quietLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newTestCache(t testing.TB, opts Options) *Cache {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitIdle waits until no flight is registered: every fetch, readahead and
// disk write has finished.
func waitIdle(t testing.TB, c *Cache) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.sched.mu.Lock()
		n := len(c.sched.flights.m)
		c.sched.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache not idle after 10s: %d blocks in flight", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkRead reads [off, off+n) through r and compares with want.
func checkRead(t testing.TB, r blobio.ReaderAt, want []byte, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	got, err := r.ReadAt(context.Background(), p, off)
	end := min(off+int64(n), int64(len(want)))
	wantN := int(max(end-off, 0))
	wantErr := error(nil)
	if off+int64(n) > int64(len(want)) {
		wantErr = io.EOF
	}
	if got != wantN || err != wantErr {
		t.Fatalf("ReadAt(%d bytes at %d) of %d-byte blob: got n=%d err=%v, want n=%d err=%v", n, off, len(want), got, err, wantN, wantErr)
	}
	if !bytes.Equal(p[:got], want[off:end]) {
		t.Fatalf("ReadAt(%d bytes at %d): got bytes differ from the blob", n, off)
	}
}

func keyN(i int) string { return fmt.Sprintf("sha256:%064x", i) }
