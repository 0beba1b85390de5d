package layerindex

import (
	"bytes"
	"context"
	"errors"
	iofs "io/fs"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// poolCounts returns the pool's cursors in existence and idle.
func poolCounts(m *Manager) (live, idle int) {
	p := m.cursors
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live, len(p.idle)
}

// Many concurrent readers of several layers, every format, never make more
// cursors than Options.MaxCursors, and read the right bytes.
func TestCursorPoolBound(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 3, 40, 100<<10)
	m := newTestManager(t, Options{MaxCursors: 3, Spacing: 64 << 10, SpanCacheBytes: -1})
	var layers []*Layer
	for _, tc := range blobCases(t, tarData) {
		l := m.Layer(tc.name, UncachedBlob(newMemBlob(tc.blob)), LayerOptions{})
		if _, err := l.Index(ctx); err != nil {
			t.Fatalf("%s: Index: %v", tc.name, err)
		}
		layers = append(layers, l)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			for range 30 {
				l := layers[rng.Intn(len(layers))]
				off := rng.Int63n(int64(len(tarData)) - 5000)
				p := make([]byte, 1+rng.Intn(5000))
				if _, err := l.TarReadAt(ctx, p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, tarData[off:off+int64(len(p))]) {
					errs <- errors.New("wrong bytes from layer " + l.key)
					return
				}
				if live, _ := poolCounts(m); live > 3 {
					errs <- errors.New("more cursors than MaxCursors")
					return
				}
			}
		}(int64(g))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if live, idle := poolCounts(m); live > 3 || idle != live {
		t.Errorf("after the readers: got %d cursors, %d idle; want at most 3, all idle", live, idle)
	}
}

// A reader that finds every cursor in use waits, and gives up with its ctx.
func TestCursorPoolWaitHonoursContext(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 4, 10, 50<<10)
	m := newTestManager(t, Options{MaxCursors: 1})
	l := m.Layer("k", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	held, err := m.cursors.take(ctx, l, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.TarReadAt(short, make([]byte, 10), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TarReadAt with every cursor in use: got %v, want a wait ended by the deadline", err)
	}
	done := make(chan error, 1)
	p := make([]byte, 100)
	go func() {
		_, err := l.TarReadAt(ctx, p, 1000)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	m.cursors.put(held)
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(p, tarData[1000:1100]) {
			t.Errorf("TarReadAt after a cursor came back: got %v, right bytes %v", err, bytes.Equal(p, tarData[1000:1100]))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TarReadAt still waiting after a cursor came back")
	}
}

// A TarReader's idle cursor may be taken over by other reads; the
// TarReader goes on with another and reads the right bytes; Close frees
// its cursor and later reads fail.
func TestTarReaderCursorTakenOver(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 5, 30, 100<<10)
	m := newTestManager(t, Options{MaxCursors: 1, Spacing: 64 << 10})
	a := m.Layer("a", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	b := m.Layer("b", UncachedBlob(newMemBlob(zstdOf(t, tarData, 100<<10))), LayerOptions{})
	for _, l := range []*Layer{a, b} {
		if _, err := l.Index(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := a.NewTarReader()
	var got []byte
	buf := make([]byte, 7000)
	for off := int64(0); off < int64(len(tarData)); {
		n, err := r.ReadAt(ctx, buf, off)
		if err != nil && n == 0 {
			break
		}
		got = append(got, buf[:n]...)
		off += int64(n)
		// Another layer's read takes the only cursor over.
		q := make([]byte, 50)
		qo := (off * 7) % int64(len(tarData)-50)
		if _, err := b.TarReadAt(ctx, q, qo); err != nil || !bytes.Equal(q, tarData[qo:qo+50]) {
			t.Fatalf("layer b at %d: got %v or wrong bytes", qo, err)
		}
	}
	if !bytes.Equal(got, tarData) {
		t.Fatalf("TarReader with its cursor taken over: got %d bytes, want the %d of the tar", len(got), len(tarData))
	}
	if live, _ := poolCounts(m); live != 1 {
		t.Errorf("cursors: got %d, want 1", live)
	}
	if _, err := r.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	r.Close() // its cursor is idle and its own: freed
	if live, idle := poolCounts(m); live != 0 || idle != 0 {
		t.Errorf("after Close: got %d cursors, %d idle; want none", live, idle)
	}
	if _, err := r.ReadAt(ctx, buf, 0); !errors.Is(err, iofs.ErrClosed) {
		t.Errorf("ReadAt after Close: got %v, want ErrClosed", err)
	}
}
