package layerindex

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var manyFiles struct {
	once  sync.Once
	gz    []byte
	names []string
	sizes map[string]int64
}

// manyFilesBlob is a gzip tar of 20,000 files of up to 16 KiB (about
// 160 MiB uncompressed), like the benchmark image of scripts/bench.sh.
func manyFilesBlob(b *testing.B) ([]byte, []string) {
	manyFiles.once.Do(func() {
		rng := rand.New(rand.NewSource(5))
		var files []tarFile
		for i := 0; i < 20000; i++ {
			name := "d" + fmtInt(i%50) + "/f" + fmtInt(i)
			files = append(files, reg(name, content(rng, rng.Intn(16<<10))))
			manyFiles.names = append(manyFiles.names, name)
		}
		manyFiles.gz = stdGzip(b, makeTar(b, files), 6)
	})
	return manyFiles.gz, manyFiles.names
}

// heapPeak samples the heap in use until stop is closed and returns the
// highest figure seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// BenchmarkParallelRandomFiles is 64 readers of random whole files of a
// gzip layer whose index is loaded, reading in 128 KiB requests as FUSE
// does; it reports the peak heap above what the blob and index hold.
func BenchmarkParallelRandomFiles(b *testing.B) {
	gz, names := manyFilesBlob(b)
	ctx := context.Background()
	opts := Options{}
	if v := os.Getenv("REGFS_BENCH_CURSORS"); v != "" {
		opts.MaxCursors, _ = strconv.Atoi(v)
	}
	m, err := NewManager(opts)
	if err != nil {
		b.Fatal(err)
	}
	l := m.Layer("k", UncachedBlob(newMemBlob(gz)), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	peak := heapPeak(stop)
	var files atomic.Int64
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func(seed int64) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(seed))
				buf := make([]byte, 128<<10)
				for range 8 {
					e, _ := x.Lookup(names[rng.Intn(len(names))])
					r, err := l.OpenFile(ctx, e)
					if err != nil {
						b.Error(err)
						return
					}
					for off := int64(0); off < r.Size(); off += int64(len(buf)) {
						if _, err := r.ReadAt(ctx, buf, off); err != nil && !errors.Is(err, io.EOF) {
							b.Error(err)
							return
						}
					}
					files.Add(1)
				}
			}(rand.Int63())
		}
		wg.Wait()
	}
	b.StopTimer()
	close(stop)
	p := <-peak
	b.ReportMetric(float64(files.Load())/b.Elapsed().Seconds(), "files/s")
	b.ReportMetric(float64(p-min(p, base))/(1<<20), "peakMiB")
	b.ReportMetric(float64(base)/(1<<20), "baseMiB")
}
