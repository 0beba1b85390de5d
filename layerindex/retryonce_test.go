package layerindex

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healingBlob fails its first failures reads, then serves its bytes.
type healingBlob struct {
	*memBlob
	failures atomic.Int64
}

var errFlaky = errors.New("registry answered 500")

func (b *healingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if b.failures.Add(-1) >= 0 {
		return 0, errFlaky
	}
	return b.memBlob.ReadAt(ctx, p, off)
}

// A failed format probe is retried by later callers while others are
// still inside the first attempt: no caller hangs, none sees a made-up
// format, and once the blob heals every caller gets the format (run with
// -race: resetting a sync.Once under its users was a data race and hung
// later lookups forever).
func TestFormatRetryAfterFailureConcurrent(t *testing.T) {
	ctx := context.Background()
	gz := gzipOf(t, makeTar(t, []tarFile{reg("a", []byte("hello"))}), 6)
	for round := 0; round < 20; round++ {
		blob := &healingBlob{memBlob: newMemBlob(gz)}
		blob.failures.Store(5)
		l := newTestManager(t, Options{}).Layer("k", UncachedBlob(blob), LayerOptions{})
		var wg sync.WaitGroup
		var wrong atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					f, err := l.Format(ctx)
					if err == nil {
						if f != FormatGzip {
							wrong.Add(1)
						}
						return
					}
					if !errors.Is(err, errFlaky) {
						t.Errorf("Format: got %v, want the blob's error", err)
						return
					}
				}
				t.Error("Format: still failing after the blob healed")
			}()
		}
		waitOrFail(t, &wg, "concurrent Format calls")
		if wrong.Load() > 0 {
			t.Fatalf("Format: %d callers got a format other than gzip", wrong.Load())
		}
		if _, err := l.Index(ctx); err != nil {
			t.Fatalf("Index after the blob healed: %v", err)
		}
	}
}

// A caller that waits for another caller's format probe or eStargz check
// (stalled on the registry) stops waiting when its own ctx ends; the
// stalled one finishes once the registry answers.
func TestFirstProbeWaitHonoursContext(t *testing.T) {
	gz := gzipOf(t, makeTar(t, []tarFile{reg("a", []byte("hello"))}), 6)
	for _, tc := range []struct {
		name     string
		from, to int64 // the reads that stall
		call     func(context.Context, *Layer) error
	}{
		{"Format", 0, 1, func(ctx context.Context, l *Layer) error { _, err := l.Format(ctx); return err }},
		{"eStargz footer", int64(len(gz)) - 100, int64(len(gz)), func(ctx context.Context, l *Layer) error { _, err := l.Index(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := &stallBlob{memBlob: newMemBlob(gz), from: tc.from, to: tc.to, open: make(chan struct{}), entered: make(chan struct{})}
			l := newTestManager(t, Options{}).Layer("k", UncachedBlob(blob), LayerOptions{})
			first := make(chan error, 1)
			go func() { first <- tc.call(context.Background(), l) }()
			<-blob.entered // the first call is stalled inside its probe
			ctx, cancel := context.WithCancel(context.Background())
			second := make(chan error, 1)
			go func() { second <- tc.call(ctx, l) }()
			cancel()
			select {
			case err := <-second:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("second call: got %v, want context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("second call: still waiting after its ctx ended")
			}
			close(blob.open)
			if err := <-first; err != nil {
				t.Errorf("first call after the registry answered: %v", err)
			}
		})
	}
}

// stallBlob holds the reads that touch [from, to) until open is closed,
// closing entered when the first one arrives.
type stallBlob struct {
	*memBlob
	from, to int64
	open     chan struct{}
	entered  chan struct{}
	once     sync.Once
}

func (b *stallBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < b.to && off+int64(len(p)) > b.from {
		b.once.Do(func() { close(b.entered) })
		select {
		case <-b.open:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return b.memBlob.ReadAt(ctx, p, off)
}

func waitOrFail(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: still running after 60 s: a hang", what)
	}
}
