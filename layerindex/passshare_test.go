package layerindex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// smallShare shrinks the share's ring and stall for one test.
func smallShare(t *testing.T, ring int, stall time.Duration) {
	oldRing, oldStall := shareRing, shareStall
	shareRing, shareStall = ring, stall
	t.Cleanup(func() { shareRing, shareStall = oldRing, oldStall })
}

// heldBlob is a memBlob whose reads at or past gate wait until open is
// closed.
type heldBlob struct {
	*memBlob
	gate int64
	open chan struct{}
}

func (b *heldBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.gate {
		select {
		case <-b.open:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return b.memBlob.ReadAt(ctx, p, off)
}

// A TarReader reading while the index pass runs takes the pass's output:
// the blob is read once and every byte is right; the checkpoints the pass
// recorded meanwhile serve random reads afterwards.
func TestTarReaderSharesPass(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 5, 40, 1<<20)
	cases := []struct {
		name    string
		gz      []byte
		chunk   int
		readers int
		ring    int
	}{
		{"speed", gzipOf(t, tarData, gzip.BestSpeed), 128 << 10, 1, 16 << 20},
		{"default-small-chunks", gzipOf(t, tarData, gzip.DefaultCompression), 4099, 1, 16 << 20},
		{"members", gzipMembers(t, tarData, 3), 1 << 20, 1, 16 << 20},
		{"two-readers-small-ring", gzipOf(t, tarData, gzip.BestSpeed), 64 << 10, 2, 256 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			smallShare(t, tc.ring, 5*time.Second)
			blob := newMemBlob(tc.gz)
			m, _ := NewManager(Options{ReadSize: 64 << 10, Spacing: 256 << 10})
			l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
			var trs []*TarReader
			for i := 0; i < tc.readers; i++ {
				trs = append(trs, l.NewTarReader())
			}
			l.Prefetch(ctx)
			var wg sync.WaitGroup
			got := make([][]byte, len(trs))
			for i, tr := range trs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i] = readAllTar(ctx, t, tr, tc.chunk)
					tr.Close()
				}()
			}
			wg.Wait()
			for i := range got {
				if !bytes.Equal(got[i], tarData) {
					t.Fatalf("reader %d: got %d bytes, want the %d of the tar (equal: false)", i, len(got[i]), len(tarData))
				}
			}
			// The reader saw the end only once the index was ready.
			if p := l.Progress(); p.State != "ready" {
				t.Errorf("progress after the reader's end: got %q, want ready", p.State)
			}
			// One pass. A reader attaches at its first read, so with a
			// 256 KiB ring a reader whose goroutine starts late (a loaded
			// machine) finds the stream's start gone and decodes on its
			// own: then one more pass for each such reader.
			passes := int64(1)
			if tc.readers > 1 {
				passes += int64(tc.readers)
			}
			_, fetched := blob.counts()
			if fetched > passes*int64(len(tc.gz))+int64(len(tc.gz))/10 {
				t.Errorf("blob bytes read: got %d, want about %d (%d pass(es) at most)", fetched, len(tc.gz), passes)
			}
			if l.share.cur.Load() != nil {
				t.Errorf("share still held after the pass and its readers ended")
			}
			rng := rand.New(rand.NewSource(1))
			for i := 0; i < 20; i++ {
				off := rng.Int63n(int64(len(tarData)))
				p := make([]byte, 5000)
				n, err := l.TarReadAt(ctx, p, off)
				if err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(p[:n], tarData[off:off+int64(n)]) {
					t.Fatalf("TarReadAt(%d) after the pass: got %d bytes, %v, equal %v", off, n, err, bytes.Equal(p[:n], tarData[off:off+int64(n)]))
				}
			}
		})
	}
}

// A reader that stops for longer than the pass waits is left behind; when
// it comes back it decodes for itself, from a checkpoint, and still gets
// the right bytes. The pass is not held up for long.
func TestTarReaderLeftBehind(t *testing.T) {
	ctx := context.Background()
	smallShare(t, 128<<10, 20*time.Millisecond)
	tarData, _ := randomTree(t, 6, 30, 512<<10)
	gz := gzipOf(t, tarData, gzip.BestSpeed)
	m, _ := NewManager(Options{ReadSize: 64 << 10, Spacing: 256 << 10})
	l := m.Layer("k", UncachedBlob(newMemBlob(gz)), LayerOptions{})
	tr := l.NewTarReader()
	defer tr.Close()
	p := make([]byte, 10000)
	if n, err := tr.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p[:n], tarData[:n]) {
		t.Fatalf("first read: got %d bytes, %v", n, err)
	}
	start := time.Now()
	if _, err := l.TarSize(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("pass with a stalled reader took %v, want it to leave the reader behind", d)
	}
	got := append([]byte(nil), p[:10000]...)
	got = append(got, readAllFrom(ctx, t, tr, 10000, 70000)...)
	if !bytes.Equal(got, tarData) {
		t.Fatalf("got %d bytes, want the %d of the tar (equal: false)", len(got), len(tarData))
	}
}

// A reader ahead of the pass waits for it; its ctx ends the wait with an
// error, not bytes.
func TestTarReaderWaitCancelled(t *testing.T) {
	tarData, _ := randomTree(t, 7, 20, 256<<10)
	gz := gzipOf(t, tarData, gzip.BestSpeed)
	blob := &heldBlob{memBlob: newMemBlob(gz), gate: int64(len(gz)) / 2, open: make(chan struct{})}
	defer close(blob.open)
	m, _ := NewManager(Options{ReadSize: 16 << 10})
	l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
	tr := l.NewTarReader()
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	off := int64(len(tarData)) - 100
	p := make([]byte, 50)
	n, err := tr.ReadAt(ctx, p, off)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read ahead of a stuck pass: got %d bytes, %v; want context.DeadlineExceeded", n, err)
	}
}

// A pass that fails (corrupt blob) fails the reader too: an error, never
// io.EOF. (The bytes before it may be wrong, as from any gzip decoder: only
// the member's CRC, at its end, tells.)
func TestTarReaderPassFails(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 8, 20, 256<<10)
	gz := gzipOf(t, tarData, gzip.BestSpeed)
	bad := append([]byte(nil), gz...)
	bad[len(bad)/2] ^= 0x5a
	m, _ := NewManager(Options{ReadSize: 16 << 10})
	blob := newMemBlob(bad)
	l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
	tr := l.NewTarReader()
	defer tr.Close()
	var got []byte
	p := make([]byte, 32<<10)
	var err error
	for off := int64(0); ; {
		var n int
		n, err = tr.ReadAt(ctx, p, off)
		got = append(got, p[:n]...)
		off += int64(n)
		if err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read of a corrupt layer: got %d bytes and %v, want an error", len(got), err)
	}
	// Later reads fail too (each decoding again, as a failed decoder
	// can't go on), but start no new pass each on top of that.
	_, before := blob.counts()
	for i := 0; i < 3; i++ {
		if n, err := tr.ReadAt(ctx, p, int64(len(got))); err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("read %d after the failure: got %d bytes and %v, want an error", i, n, err)
		}
	}
	if _, after := blob.counts(); after-before > 3*(int64(len(bad))+16<<10) {
		t.Errorf("three reads after a failed pass read %d blob bytes, want at most three decodes' %d", after-before, 3*len(bad))
	}
}

func readAllFrom(ctx context.Context, t *testing.T, r *TarReader, off int64, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := r.ReadAt(ctx, buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
	}
}

// TarSizeOrStream, as fs's open of layer.tar uses it: a layer that fits the
// ring gets its size; a larger one is streamed at once, with one decode.
func TestTarSizeOrStream(t *testing.T) {
	ctx := context.Background()
	smallShare(t, 64<<10, 5*time.Second)
	for _, tc := range []struct {
		name      string
		maxSize   int
		wantKnown bool
	}{
		{"fits-ring", 1 << 10, true},
		{"larger", 512 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tarData, _ := randomTree(t, 9, 12, tc.maxSize)
			if tc.wantKnown && len(tarData) > shareRing/2 || !tc.wantKnown && len(tarData) < 2*shareRing {
				t.Fatalf("test tar of %d bytes does not fit the case", len(tarData))
			}
			gz := gzipOf(t, tarData, gzip.BestSpeed)
			blob := newMemBlob(gz)
			m, _ := NewManager(Options{ReadSize: 64 << 10})
			l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
			tr := l.NewTarReader()
			defer tr.Close()
			size, known, err := l.TarSizeOrStream(ctx)
			if err != nil || known != tc.wantKnown || known && size != int64(len(tarData)) {
				t.Fatalf("TarSizeOrStream: got %d, %v, %v; want known %v (size %d)", size, known, err, tc.wantKnown, len(tarData))
			}
			got := readAllFrom(ctx, t, tr, 0, 100<<10)
			if !bytes.Equal(got, tarData) {
				t.Fatalf("got %d bytes, want the %d of the tar (equal: false)", len(got), len(tarData))
			}
			if _, fetched := blob.counts(); fetched > int64(len(gz))+int64(len(gz))/10 {
				t.Errorf("blob bytes read: got %d, want about %d (one pass)", fetched, len(gz))
			}
			if size, known, err := l.TarSizeOrStream(ctx); err != nil || !known || size != int64(len(tarData)) {
				t.Errorf("TarSizeOrStream after the pass: got %d, %v, %v; want %d, true", size, known, err, len(tarData))
			}
		})
	}
}

// tailFailBlob fails reads that reach its last bytes (the eStargz footer
// check), so a pass ends before it decodes anything.
type tailFailBlob struct{ *memBlob }

func (b tailFailBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.Size()-10 && off > 0 {
		return 0, errors.New("tail unreadable")
	}
	return b.memBlob.ReadAt(ctx, p, off)
}

// A pass that ends without publishing anything does not leave a reader
// waiting for it: the reader decodes on its own (here meeting the same
// unreadable tail).
func TestTarReaderPassEndsUnpublished(t *testing.T) {
	tarData, _ := randomTree(t, 10, 10, 64<<10)
	gz := gzipOf(t, tarData, gzip.BestSpeed)
	m, _ := NewManager(Options{ReadSize: 4 << 10})
	l := m.Layer("k", UncachedBlob(tailFailBlob{newMemBlob(gz)}), LayerOptions{})
	tr := l.NewTarReader()
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := make([]byte, 1000)
	n, err := tr.ReadAt(ctx, p, 0)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read: still waiting for a pass that ended (got %d bytes, %v)", n, err)
	}
	if err == nil && !bytes.Equal(p[:n], tarData[:n]) {
		t.Fatalf("read: got %d wrong bytes", n)
	}
}
