package mounttest

import (
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkLargeBlob reads the large layer's blob sequentially through a
// fresh mount (cold: every byte fetched), again (warm: from the block
// cache and the page cache), and with net/http straight from the registry,
// in one run, and reports the ratios and the bytes fetched per byte read.
//
//	go test -run '^$' -bench LargeBlob ./fs/mounttest/
func BenchmarkLargeBlob(b *testing.B) {
	if skipWhy != "" {
		b.Skipf("FUSE unusable: %s", skipWhy)
	}
	l := fixtures.Large.Layers[0]
	id := chainIDs(fixtures.Large.DiffIDs)[0]
	read := func(r io.Reader) time.Duration {
		start := time.Now()
		h := sha256.New()
		if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var cold, warm, direct time.Duration
	var fetched int64
	for i := 0; i < b.N; i++ {
		resp, err := http.Get(reg.URL + "/v2/test/large/blobs/" + l.Digest.String())
		if err != nil {
			b.Fatal(err)
		}
		direct += read(resp.Body)
		resp.Body.Close()

		mnt, done := mountFor(b, reg.Host, mountOpts{})
		reg.ResetStats()
		path := filepath.Join(mnt, "test/large:latest/layers", id, "blob")
		for pass, d := range []*time.Duration{&cold, &warm} {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			*d += read(f)
			f.Close()
			if pass == 0 {
				fetched += reg.Stats().BlobBytesServed
			}
		}
		done()
	}
	mb := float64(l.Size) * float64(b.N) / (1 << 20)
	b.ReportMetric(mb/cold.Seconds(), "cold-MB/s")
	b.ReportMetric(mb/warm.Seconds(), "warm-MB/s")
	b.ReportMetric(mb/direct.Seconds(), "http-MB/s")
	b.ReportMetric(direct.Seconds()/cold.Seconds(), "cold/http")
	b.ReportMetric(direct.Seconds()/warm.Seconds(), "warm/http")
	b.ReportMetric(float64(fetched)/(float64(l.Size)*float64(b.N)), "fetched/read")
}
