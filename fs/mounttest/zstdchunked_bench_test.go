package mounttest

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// BenchmarkZstdChunkedFirstRead reads one small file from a 400+ MiB
// zstd:chunked layer on a fresh mount (nothing cached, nothing indexed)
// and reports the blob bytes the registry served for it, against the
// blob's size, and the time to the file's last byte.
//
//	go test -run '^$' -bench ZstdChunkedFirstRead -benchtime 3x ./fs/mounttest/
func BenchmarkZstdChunkedFirstRead(b *testing.B) {
	if skipWhy != "" {
		b.Skipf("FUSE unusable: %s", skipWhy)
	}
	entries := registrytest.LargeEntries(11, 600<<20)
	img := pushZstdChunkedImage(b, "test/zstd-chunked-bench", [][]registrytest.Entry{entries}, nil)
	blobSize := img.Layers[0].Size
	var small registrytest.Entry
	for _, e := range entries {
		if e.Type == tar.TypeReg && e.Size() > 1<<10 && e.Size() < 32<<10 {
			small = e
			break
		}
	}
	var fetched int64
	var took time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mnt, done := mountFor(b, reg.Host, mountOpts{})
		reg.ResetStats()
		start := time.Now()
		got, err := os.ReadFile(filepath.Join(mnt, "test/zstd-chunked-bench:latest/rootfs", small.Name))
		took += time.Since(start)
		fetched += reg.Stats().BlobBytesServed
		done()
		if err != nil || !bytes.Equal(got, small.Data()) {
			b.Fatalf("%s: %d bytes, %v; want the layer's %d", small.Name, len(got), err, small.Size())
		}
	}
	b.ReportMetric(float64(blobSize)/(1<<20), "blob-MiB")
	b.ReportMetric(float64(fetched)/float64(b.N), "fetched-B/op")
	b.ReportMetric(100*float64(fetched)/float64(b.N)/float64(blobSize), "fetched-%")
	b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "first-read-ms")
}
