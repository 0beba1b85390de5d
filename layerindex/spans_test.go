package layerindex

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
)

// singleFrameLayer is a tar of nfiles files of size bytes, as one zstd
// frame. The files are mostly repetitive (fast to make and decode, even
// under the race detector), each different from the others.
func singleFrameLayer(t testing.TB, nfiles, size int) ([]byte, []tarFile, []byte) {
	rng := rand.New(rand.NewSource(31))
	var files []tarFile
	for i := 0; i < nfiles; i++ {
		body := bytes.Repeat([]byte("file "+fmtInt(i)+" says hello\n"), size/16+1)[:size]
		rng.Read(body[:1024])
		files = append(files, reg("f"+fmtInt(i), body))
	}
	tarData := makeTar(t, files)
	return tarData, files, zstdOf(t, tarData, 0)
}

// Reads of a one-frame zstd blob after the index pass: a layer smaller than
// half the span cache is read with no decoding at all; in a larger one, a
// place read once is read again from the cache, not decoded from byte 0.
func TestZstdSingleFrameSpans(t *testing.T) {
	ctx := context.Background()
	// Files 256 KiB apart, places read 2 MiB apart: a cursor's window
	// (2 MiB) never holds two of them.
	const nfiles, size, spacing = 48, 256 << 10, 64 << 10
	tarData, files, blobData := singleFrameLayer(t, nfiles, size)

	t.Run("small layer", func(t *testing.T) {
		blob := newMemBlob(blobData)
		m := newTestManager(t, Options{Spacing: spacing, ReadSize: 64 << 10, SpanCacheBytes: 4 * int64(len(tarData))})
		l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			t.Fatal(err)
		}
		blob.reset()
		for i := len(files) - 1; i >= 0; i-- {
			e, _ := x.Lookup(files[i].hdr.Name)
			if got := readFile(ctx, t, l, e); !bytes.Equal(got, files[i].body) {
				t.Fatalf("%s: wrong content", e.Name)
			}
		}
		r := l.NewTarReader()
		defer r.Close()
		if got := readAllTar(ctx, t, r, 100<<10); !bytes.Equal(got, tarData) {
			t.Errorf("tar stream: got %d bytes, want the %d of the tar", len(got), len(tarData))
		}
		// Only the head of the stream, before the first 1.5 spacings, is
		// decoded again (cheap to restart, so not kept).
		if calls, got := blob.counts(); got > 8*64<<10 {
			t.Errorf("reads after the index pass fetched %d bytes in %d reads, want only the head (spans cached; blob %d)", got, calls, len(blobData))
		}
	})

	for _, tc := range []struct {
		name       string
		spanCache  int64
		wantReread bool // the second round of reads fetches from the blob again
	}{
		{"spans", 4 << 20, false},
		{"no spans", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := newMemBlob(blobData)
			m := newTestManager(t, Options{Spacing: spacing, SpanCacheBytes: tc.spanCache})
			l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
			x, err := l.Index(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// More places than the layer keeps cursors, far apart, out of order.
			order := []int{47, 23, 39, 15, 31, 7}
			p := make([]byte, 4096)
			var reread int64
			for round := 0; round < 2; round++ {
				for _, i := range order {
					e, _ := x.Lookup(files[i].hdr.Name)
					r, err := l.OpenFile(ctx, e)
					if err != nil {
						t.Fatal(err)
					}
					blob.reset()
					if _, err := r.ReadAt(ctx, p, 1000); err != nil {
						t.Fatalf("%s: %v", e.Name, err)
					}
					if !bytes.Equal(p, files[i].body[1000:1000+len(p)]) {
						t.Fatalf("%s round %d: wrong bytes", e.Name, round)
					}
					if _, got := blob.counts(); round == 1 {
						reread += got
					}
				}
			}
			if (reread > 0) != tc.wantReread {
				t.Errorf("second round of reads fetched %d bytes, want a fetch: %v", reread, tc.wantReread)
			}
			if m.spans != nil && int64(m.spans.Len())*spanSize > tc.spanCache {
				t.Errorf("span cache holds %d spans, more than %d bytes", m.spans.Len(), tc.spanCache)
			}
		})
	}
}

// Gzip reads restart at a checkpoint: no spans are kept for them.
func TestGzipKeepsNoSpans(t *testing.T) {
	ctx := context.Background()
	tarData, files, _ := singleFrameLayer(t, 16, 128<<10)
	m := newTestManager(t, Options{Spacing: 256 << 10})
	l := m.Layer("k", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		e, _ := x.Lookup(f.hdr.Name)
		if got := readFile(ctx, t, l, e); !bytes.Equal(got, f.body) {
			t.Fatalf("%s: wrong content", e.Name)
		}
	}
	if n := m.spans.Len(); n != 0 {
		t.Errorf("span cache after gzip reads: got %d spans, want 0", n)
	}
}
