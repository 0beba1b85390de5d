package layerindex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
)

// blobCases returns one tar stream stored every way we read.
func blobCases(t testing.TB, tarData []byte) []struct {
	name string
	blob []byte
	fmt  Format
} {
	return []struct {
		name string
		blob []byte
		fmt  Format
	}{
		{"tar", tarData, FormatTar},
		{"gzip", gzipOf(t, tarData, gzip.DefaultCompression), FormatGzip},
		{"gzip-fastest", gzipOf(t, tarData, gzip.BestSpeed), FormatGzip},
		{"gzip-members", gzipMembers(t, tarData, 3), FormatGzip},
		{"zstd", zstdOf(t, tarData, 0), FormatZstd},
		{"zstd-frames", zstdOf(t, tarData, 300<<10), FormatZstd},
	}
}

func readAllTar(ctx context.Context, t *testing.T, r interface {
	ReadAt(context.Context, []byte, int64) (int, error)
}, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for off := int64(0); ; {
		n, err := r.ReadAt(ctx, buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
		if n != len(buf) {
			t.Fatalf("ReadAt(%d): got %d bytes and no error, want %d", off, n, len(buf))
		}
	}
}

func TestTarStream(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 1, 60, 200<<10)
	for _, tc := range blobCases(t, tarData) {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t, Options{ReadSize: 256 << 10, Spacing: 256 << 10})
			blob := newMemBlob(tc.blob)
			l := m.Layer("sha256:"+tc.name, UncachedBlob(blob), LayerOptions{})
			if got, err := l.Format(ctx); err != nil || got != tc.fmt {
				t.Fatalf("Format: got %v, %v; want %v", got, err, tc.fmt)
			}
			// Sequential, before any index: one decode streams the whole
			// tar (for gzip the index pass the read starts, whose output the
			// reader takes).
			r := l.NewTarReader()
			got := readAllTar(ctx, t, r, 64<<10)
			r.Close()
			if !bytes.Equal(got, tarData) {
				t.Fatalf("sequential read: got %d bytes, want %d (equal: false)", len(got), len(tarData))
			}
			want := int64(len(tc.blob)) + 4
			if tc.fmt == FormatGzip {
				want += min(int64(len(tc.blob)), estargz.FooterSize) // the pass checks for eStargz first
			}
			if _, n := blob.counts(); tc.fmt != FormatTar && n != want {
				t.Errorf("sequential read fetched %d blob bytes, want %d (4 magic bytes, the eStargz footer for gzip, then the blob once)", n, want)
			}
			size, err := l.TarSize(ctx)
			if err != nil || size != int64(len(tarData)) {
				t.Fatalf("TarSize: got %d, %v; want %d", size, err, len(tarData))
			}
			// Random reads, through the shared cursors.
			rng := rand.New(rand.NewSource(2))
			for i := 0; i < 40; i++ {
				off := rng.Int63n(int64(len(tarData)))
				p := make([]byte, rng.Intn(100<<10)+1)
				n, err := l.TarReadAt(ctx, p, off)
				want := tarData[off:min(off+int64(len(p)), int64(len(tarData)))]
				if n != len(want) || !bytes.Equal(p[:n], want) {
					t.Fatalf("TarReadAt(%d, %d): got %d bytes (err %v), want %d equal bytes", off, len(p), n, err, len(want))
				}
				if short := n < len(p); short != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
					t.Fatalf("TarReadAt(%d, %d): got err %v with n %d", off, len(p), err, n)
				}
			}
			// Past the end.
			if n, err := l.TarReadAt(ctx, make([]byte, 10), int64(len(tarData))); n != 0 || !errors.Is(err, io.EOF) {
				t.Errorf("read at end: got %d, %v; want 0, EOF", n, err)
			}
		})
	}
}

// A slightly backward read (out-of-order kernel readahead) must not restart
// decompression from the start.
func TestTarReaderBackwardWithinWindow(t *testing.T) {
	ctx := context.Background()
	tarData := makeTar(t, []tarFile{reg("big", content(rand.New(rand.NewSource(3)), 1<<20))})
	blob := newMemBlob(gzipOf(t, tarData, gzip.DefaultCompression))
	m := newTestManager(t, Options{})
	r := m.Layer("k", UncachedBlob(blob), LayerOptions{}).NewTarReader()
	defer r.Close()
	p := make([]byte, 128<<10)
	for _, off := range []int64{0, 256 << 10, 128 << 10, 512 << 10, 384 << 10} {
		n, err := r.ReadAt(ctx, p, off)
		if err != nil || !bytes.Equal(p[:n], tarData[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d): got %d, %v or wrong bytes", off, n, err)
		}
	}
	if _, n := blob.counts(); n > 2<<20 {
		t.Errorf("fetched %d blob bytes for 640 KiB of reads, want one pass over the start", n)
	}
}
