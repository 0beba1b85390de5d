package layercache

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// BenchmarkColdRegistry reads one 64 MiB blob cold through the cache from
// the real registry (filesystem storage, real HTTP on 127.0.0.1) and with a
// plain net/http GET of the same blob, in one run, and reports each rate
// and its ratio to the GET. The read patterns:
//
//   - fuse: 128 KiB reads, two in flight, as the kernel sends a
//     sequential read(2) through FUSE (its readahead requests overlap);
//
//   - seq128k: 128 KiB reads one after the other;
//
//   - seq1m: 1 MiB reads one after the other;
//
//   - random4k: 4 KiB reads at scattered offsets (bytes fetched per byte
//     read shows that a small read costs one block, no readahead).
//
//     go test -run '^$' -bench ColdRegistry ./layercache/
func BenchmarkColdRegistry(b *testing.B) {
	const size = 64 << 20
	ctx := context.Background()
	reg := registrytest.StartRegistry(b)
	data := randomBytes(size, 42)
	dgst, err := registrytest.NewPusher(reg).PushBytes(ctx, "bench/blob", data)
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	// As regfs wires it: the cache hashes what it reads, the client not.
	client, err := registry.New(ctx, reg.Host, registry.Options{PlainHTTP: true, UnverifiedStreams: true, Logger: logrus.NewEntry(log)})
	if err != nil {
		b.Fatal(err)
	}
	blob, err := client.OpenBlob(ctx, "bench/blob", registry.Layer{Digest: dgst, Size: size})
	if err != nil {
		b.Fatal(err)
	}
	plain := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	url := reg.URL + "/v2/bench/blob/blobs/" + dgst.String()
	buf := make([]byte, 1<<20)
	discard := struct{ io.Writer }{io.Discard}

	type pattern struct {
		name string
		read func(r *Reader) int64 // returns bytes read
	}
	seq := func(chunk int) func(r *Reader) int64 {
		return func(r *Reader) int64 {
			p := make([]byte, chunk)
			var n int64
			for off := int64(0); off < size; off += int64(chunk) {
				m, err := r.ReadAt(ctx, p, off)
				if err != nil && err != io.EOF {
					b.Fatal(err)
				}
				n += int64(m)
			}
			return n
		}
	}
	fuse := func(r *Reader) int64 {
		const chunk = 128 << 10
		var wg sync.WaitGroup
		var mu sync.Mutex
		next := int64(0)
		var total int64
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, chunk)
				for {
					mu.Lock()
					off := next
					next += chunk
					mu.Unlock()
					if off >= size {
						return
					}
					m, err := r.ReadAt(ctx, p, off)
					if err != nil && err != io.EOF {
						b.Error(err)
						return
					}
					mu.Lock()
					total += int64(m)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return total
	}
	random := func(r *Reader) int64 {
		p := make([]byte, 4<<10)
		var n int64
		for i := int64(0); i < 16; i++ {
			off := (i*7919*65536 + 12345) % (size - 4096)
			m, err := r.ReadAt(ctx, p, off)
			if err != nil {
				b.Fatal(err)
			}
			n += int64(m)
		}
		return n
	}
	patterns := []pattern{{"fuse", fuse}, {"seq128k", seq(128 << 10)}, {"seq1m", seq(1 << 20)}, {"random4k", random}}
	times := make([]time.Duration, len(patterns))
	fetched := make([]int64, len(patterns))
	readBytes := make([]int64, len(patterns))
	var direct time.Duration
	for b.Loop() {
		start := time.Now()
		resp, err := plain.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(discard, resp.Body, buf); err != nil || n != size {
			b.Fatalf("GET: %d bytes, %v", n, err)
		}
		resp.Body.Close()
		direct += time.Since(start)
		for i, pt := range patterns {
			c, err := New(Options{Logger: log, MemoryBytes: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			r := c.Open(blob)
			start := time.Now()
			readBytes[i] += pt.read(r)
			times[i] += time.Since(start)
			fetched[i] += c.Stats().BytesFetched
			r.Close()
			c.Close()
		}
	}
	mb := func(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
	httpRate := mb(size*int64(b.N), direct)
	b.ReportMetric(httpRate, "http-MB/s")
	for i, pt := range patterns {
		if pt.name == "random4k" {
			b.ReportMetric(float64(fetched[i])/float64(readBytes[i]), pt.name+"-fetched/read")
			continue
		}
		rate := mb(readBytes[i], times[i])
		b.ReportMetric(rate, pt.name+"-MB/s")
		b.ReportMetric(rate/httpRate, pt.name+"/http")
	}
	b.ReportMetric(0, "ns/op")
}
