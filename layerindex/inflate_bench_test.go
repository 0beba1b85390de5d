package layerindex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

var realisticData struct {
	once sync.Once
	gz   []byte
	size int64
	err  error
}

// realisticBlob is the 64 MiB version of the layer scripts/bench.sh reads
// (registrytest.BuildLargeLayer, seed 7: 60 % incompressible, gzip
// BestSpeed), cached on disk across runs. Unlike benchBlob it inflates at
// the speed of the real benchmark layer.
func realisticBlob(b *testing.B) []byte {
	realisticData.once.Do(func() {
		l, err := registrytest.BuildLargeLayer(7, 64<<20)
		if err != nil {
			realisticData.err = err
			return
		}
		realisticData.gz, realisticData.err = os.ReadFile(l.BlobPath)
		realisticData.size = l.UncompressedSize
	})
	if realisticData.err != nil {
		b.Skipf("large layer: %v", realisticData.err)
	}
	b.SetBytes(realisticData.size)
	return realisticData.gz
}

func drainInflater(b *testing.B, f *gzipStream, buf []byte) {
	for {
		_, err := f.read(buf)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRealisticInflate compares the decoders on the realistic layer:
// ours plain, ours recording checkpoints every 2 MiB (as the index pass
// does), klauspost's gzip, and gzip -dc in a subprocess.
func BenchmarkRealisticInflate(b *testing.B) {
	b.Run("ours", func(b *testing.B) {
		gz := realisticBlob(b)
		buf := make([]byte, 256<<10)
		for b.Loop() {
			drainInflater(b, newGzipStream(newBlobReader(context.Background(), newMemBlob(gz), 0, 1<<20)), buf)
		}
	})
	b.Run("ours-checkpoints", func(b *testing.B) {
		gz := realisticBlob(b)
		buf := make([]byte, 256<<10)
		for b.Loop() {
			f := newGzipStream(newBlobReader(context.Background(), newMemBlob(gz), 0, 1<<20))
			var cps []checkpoint
			last := int64(0)
			f.onCheckpoint = func(cp flate.InflateCheckpoint) {
				if u := cp.UncompressedOffset; u-last >= defaultSpacing {
					cps = append(cps, checkpoint{UOff: u, COff: cp.CompressedOffset, Bit: cp.BitOffset, Window: append([]byte(nil), cp.Window...)})
					last = u
				}
			}
			drainInflater(b, f, buf)
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		gz := realisticBlob(b)
		for b.Loop() {
			zr, err := gzip.NewReader(bytes.NewReader(gz))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, zr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gzip-dc", func(b *testing.B) {
		gz := realisticBlob(b)
		path := b.TempDir() + "/x.gz"
		if err := os.WriteFile(path, gz, 0o644); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			cmd := exec.Command("gzip", "-dc", path)
			cmd.Stdout = io.Discard
			if err := cmd.Run(); err != nil {
				b.Skipf("gzip -dc: %v", err)
			}
		}
	})
	b.Run("index-pass", func(b *testing.B) {
		gz := realisticBlob(b)
		for b.Loop() {
			m, _ := NewManager(Options{})
			if _, err := m.Layer("k", UncachedBlob(newMemBlob(gz)), LayerOptions{}).Index(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRegistryLayerTar is `cat layer.tar` of a cold gzip layer
// without FUSE: the realistic 256 MiB layer (set REGFS_BENCH_LARGE_MB for
// another size) pushed to the in-process registry, read through a fresh
// layercache and Manager as fs/ does it (open: TarSizeOrStream with a 2 s
// timeout, which starts the index pass; REGFS_BENCH_OPEN=tarsize waits
// for TarSize instead, as fs did before; then 1 MiB reads from two
// goroutines, as go-fuse serves the kernel's readahead). The baseline in the same run
// is an HTTP GET piped into gzip -dc (the benchmark's curl | gzip -dc).
//
//	go test -run '^$' -bench RegistryLayerTar -benchtime 3x ./layerindex/
func BenchmarkRegistryLayerTar(b *testing.B) {
	mb := int64(256)
	if s := os.Getenv("REGFS_BENCH_LARGE_MB"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("REGFS_BENCH_LARGE_MB: %v", err)
		}
		mb = v
	}
	ctx := context.Background()
	layer, err := registrytest.BuildLargeLayer(7, mb<<20)
	if err != nil {
		b.Skipf("large layer: %v", err)
	}
	gz, err := os.ReadFile(layer.BlobPath)
	if err != nil {
		b.Fatal(err)
	}
	reg := registrytest.StartRegistry(b)
	dgst, err := registrytest.NewPusher(reg).PushBytes(ctx, "bench/layer", gz)
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	client, err := registry.New(ctx, reg.Host, registry.Options{PlainHTTP: true, Logger: logrus.NewEntry(log)})
	if err != nil {
		b.Fatal(err)
	}
	url := reg.URL + "/v2/bench/layer/blobs/" + dgst.String()
	size := layer.UncompressedSize
	openWait := 2 * time.Second
	if s := os.Getenv("REGFS_BENCH_OPEN_WAIT"); s != "" {
		if openWait, err = time.ParseDuration(s); err != nil {
			b.Fatalf("REGFS_BENCH_OPEN_WAIT: %v", err)
		}
	}
	// REGFS_BENCH_OPEN=tarsize opens as fs did before TarSizeOrStream.
	openOld := os.Getenv("REGFS_BENCH_OPEN") == "tarsize"
	var regfsT, baseT, openT time.Duration
	shareCounts.served.Store(0)
	shareCounts.fallbacks.Store(0)
	shareCounts.dropped.Store(0)
	shareCounts.passWait.Store(0)
	for b.Loop() {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command("gzip", "-dc")
		cmd.Stdin, cmd.Stdout = resp.Body, io.Discard
		err = cmd.Run()
		resp.Body.Close()
		if err != nil {
			b.Skipf("gzip -dc: %v", err)
		}
		baseT += time.Since(start)

		blob, err := client.OpenBlob(ctx, "bench/layer", registry.Layer{Digest: dgst, Size: int64(len(gz))})
		if err != nil {
			b.Fatal(err)
		}
		cache, err := layercache.New(layercache.Options{Logger: log, MemoryBytes: 128 << 20, BlockSize: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		m, err := NewManager(Options{ReadSize: 1 << 20, Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		src := cache.Open(blob)
		start = time.Now()
		l := m.Layer(blob.Key(), src, LayerOptions{})
		tr := l.NewTarReader()
		wctx, cancel := context.WithTimeout(ctx, openWait)
		if openOld {
			_, err = l.TarSize(wctx)
		} else {
			_, _, err = l.TarSizeOrStream(wctx)
		}
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			b.Fatal(err)
		}
		openT += time.Since(start)
		got := readLikeFUSE(b, ctx, tr, 1<<20)
		if _, err := l.TarSize(ctx); err != nil {
			b.Fatal(err)
		}
		regfsT += time.Since(start)
		if got != size {
			b.Fatalf("layer.tar: got %d bytes, want %d", got, size)
		}
		src.Close()
		cache.Close()
	}
	b.ReportMetric(float64(shareCounts.served.Load())/float64(size*int64(b.N)), "shared/byte")
	b.ReportMetric(float64(shareCounts.fallbacks.Load())/float64(b.N), "fallbacks/op")
	b.ReportMetric(float64(shareCounts.dropped.Load())/float64(b.N), "dropped/op")
	b.ReportMetric(time.Duration(shareCounts.passWait.Load()).Seconds()/float64(b.N), "pass-wait-s")
	rate := func(d time.Duration) float64 { return float64(size) * float64(b.N) / (1 << 20) / d.Seconds() }
	b.ReportMetric(rate(regfsT), "regfs-MiB/s")
	b.ReportMetric(rate(baseT), "gzip-dc-MiB/s")
	b.ReportMetric(baseT.Seconds()/regfsT.Seconds(), "ratio")
	b.ReportMetric(openT.Seconds()/float64(b.N), "open-s")
	b.ReportMetric(regfsT.Seconds()/float64(b.N), "regfs-s")
	b.ReportMetric(0, "ns/op")
}

// readLikeFUSE reads r to its end in chunk-sized reads from two
// goroutines, returning the bytes read.
func readLikeFUSE(b *testing.B, ctx context.Context, r *TarReader, chunk int64) int64 {
	defer r.Close()
	var mu sync.Mutex
	var next, total int64
	done := false
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, chunk)
			for {
				mu.Lock()
				off := next
				next += chunk
				stop := done
				mu.Unlock()
				if stop {
					return
				}
				n, err := r.ReadAt(ctx, p, off)
				mu.Lock()
				total += int64(n)
				if errors.Is(err, io.EOF) {
					done = true
				} else if err != nil {
					done = true
					b.Error(err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return total
}
