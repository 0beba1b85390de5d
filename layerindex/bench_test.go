package layerindex

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
)

var benchData struct {
	once sync.Once
	tar  []byte
	gz   []byte
}

// benchBlob is a ~64 MiB tar of mixed text and random files, gzip -6.
func benchBlob(b *testing.B) ([]byte, []byte) {
	benchData.once.Do(func() {
		rng := rand.New(rand.NewSource(11))
		var files []tarFile
		total := 0
		for i := 0; total < 64<<20; i++ {
			n := rng.Intn(1 << 20)
			c := content(rng, n)
			if i%3 != 0 { // mostly compressible, like real layers
				copy(c[n/2:], bytes.Repeat([]byte("text /usr/lib/ 42\n"), n/36+1))
			}
			files = append(files, reg("f/"+string(rune('a'+i%26))+"/"+itoa(i), c))
			total += n
		}
		benchData.tar = makeTar(b, files)
		benchData.gz = stdGzip(b, benchData.tar, 6)
	})
	return benchData.tar, benchData.gz
}

func itoa(i int) string {
	return string(append([]byte(nil), []byte(func() string { return fmtInt(i) }())...))
}

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func BenchmarkStreamInflater(b *testing.B) {
	tarData, gz := benchBlob(b)
	b.SetBytes(int64(len(tarData)))
	buf := make([]byte, 256<<10)
	for b.Loop() {
		f := newGzipStream(newBlobReader(context.Background(), newMemBlob(gz), 0, 1<<20))
		for {
			_, err := f.read(buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkStreamKlauspostGzip(b *testing.B) {
	tarData, gz := benchBlob(b)
	b.SetBytes(int64(len(tarData)))
	for b.Loop() {
		zr, _ := gzip.NewReader(bytes.NewReader(gz))
		io.Copy(io.Discard, zr)
	}
}

func BenchmarkStreamStdlibGzip(b *testing.B) {
	tarData, gz := benchBlob(b)
	b.SetBytes(int64(len(tarData)))
	for b.Loop() {
		zr, _ := stdgzip.NewReader(bytes.NewReader(gz))
		io.Copy(io.Discard, zr)
	}
}

// BenchmarkStreamGzipDc execs gzip -dc on the same data, for comparison.
func BenchmarkStreamGzipDc(b *testing.B) {
	tarData, gz := benchBlob(b)
	path := b.TempDir() + "/x.gz"
	os.WriteFile(path, gz, 0o644)
	b.SetBytes(int64(len(tarData)))
	for b.Loop() {
		cmd := exec.Command("gzip", "-dc", path)
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			b.Skipf("gzip -dc: %v", err)
		}
	}
}

// BenchmarkIndexPass is the full index pass (inflate with checkpoints,
// CRC, tar headers) over the 64 MiB gzip layer.
func BenchmarkIndexPass(b *testing.B) {
	tarData, gz := benchBlob(b)
	b.SetBytes(int64(len(tarData)))
	for b.Loop() {
		m, _ := NewManager(Options{})
		if _, err := m.Layer("k", UncachedBlob(newMemBlob(gz)), LayerOptions{}).Index(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckpointRead reads 4 KiB at random offsets of the indexed
// layer: each read resumes at the nearest checkpoint. Reports the blob
// bytes fetched per read for each spacing.
func BenchmarkCheckpointRead(b *testing.B) {
	tarData, gz := benchBlob(b)
	for _, spacing := range []int64{512 << 10, 1 << 20, 2 << 20, 4 << 20} {
		b.Run("spacing="+fmtInt(int(spacing>>10))+"KiB", func(b *testing.B) {
			ctx := context.Background()
			blob := newMemBlob(gz)
			m, _ := NewManager(Options{Spacing: spacing})
			l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
			if _, err := l.Index(ctx); err != nil {
				b.Fatal(err)
			}
			idx := l.loadedIndex(ctx)
			rng := rand.New(rand.NewSource(1))
			p := make([]byte, 4096)
			blob.reset()
			reads := 0
			for b.Loop() {
				// A fresh cursor each time, as a cold read of a new file would.
				c := &cursor{l: l}
				off := rng.Int63n(int64(len(tarData)) - 4096)
				if _, err := c.readAt(ctx, p, off, idx); err != nil {
					b.Fatal(err)
				}
				reads++
			}
			_, got := blob.counts()
			b.ReportMetric(float64(got)/float64(reads), "blobB/read")
			b.ReportMetric(float64(len(idx.Checkpoints)*windowSize)/float64(len(tarData))*100, "window%")
		})
	}
}

// BenchmarkIndexLookup looks paths up in an index of 100k entries.
func BenchmarkIndexLookup(b *testing.B) {
	bld := newIndexBuilder(defaultMaxEntries)
	var names []string
	for i := 0; i < 100000; i++ {
		n := "usr/share/d" + fmtInt(i%300) + "/file" + fmtInt(i)
		names = append(names, n)
		bld.put(&Entry{Name: n, Type: '0'})
	}
	x := bld.finish()
	i := 0
	for b.Loop() {
		if _, ok := x.Lookup(names[i%len(names)]); !ok {
			b.Fatal("missing")
		}
		i++
	}
}

// BenchmarkZstdSingleFrameRead reads 4 KiB of random files, from a working
// set of 64, of the 64 MiB layer stored as one zstd frame, after its index
// pass: without the span cache each read decodes from the nearest shared
// cursor before it (often the start of the blob); with it, a file read once
// is served from memory. Reports blob bytes fetched (= decoded) per read.
func BenchmarkZstdSingleFrameRead(b *testing.B) {
	tarData, _ := benchBlob(b)
	zst := zstdOf(b, tarData, 0)
	for _, tc := range []struct {
		name  string
		spans int64
	}{{"spans=off", -1}, {"spans=64MiB", 64 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			blob := newMemBlob(zst)
			m, _ := NewManager(Options{SpanCacheBytes: tc.spans})
			l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
			x, err := l.Index(ctx)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewSource(3))
			var set []*Entry
			for len(set) < 64 {
				if e := x.Entries()[rng.Intn(x.Len())]; e.Type == tar.TypeReg && e.Size > 4096 {
					set = append(set, e)
				}
			}
			p := make([]byte, 4096)
			blob.reset()
			reads := 0
			for b.Loop() {
				r, err := l.OpenFile(ctx, set[rng.Intn(len(set))])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadAt(ctx, p, 0); err != nil {
					b.Fatal(err)
				}
				reads++
			}
			_, got := blob.counts()
			b.ReportMetric(float64(got)/float64(reads), "blobB/read")
		})
	}
}

// BenchmarkTarIndexPass indexes the 64 MiB uncompressed tar: by jumping
// from header to header (what Layer.Index does) and, for comparison, by
// streaming the whole blob through archive/tar. Reports blob bytes read.
func BenchmarkTarIndexPass(b *testing.B) {
	tarData, _ := benchBlob(b)
	for _, mode := range []string{"headers", "stream"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			blob := newMemBlob(tarData)
			passes := 0
			for b.Loop() {
				if mode == "headers" {
					m, _ := NewManager(Options{})
					if _, err := m.Layer("k", UncachedBlob(blob), LayerOptions{}).Index(ctx); err != nil {
						b.Fatal(err)
					}
				} else if _, err := readTarIndex(&countingReader{r: newBlobReader(ctx, blob, 0, defaultReadSize)}, newIndexBuilder(defaultMaxEntries)); err != nil {
					b.Fatal(err)
				}
				passes++
			}
			_, got := blob.counts()
			b.ReportMetric(float64(got)/float64(passes), "blobB/pass")
		})
	}
}
