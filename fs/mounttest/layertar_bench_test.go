package mounttest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// BenchmarkLayerTarCold is `cat layer.tar` of a cold gzip layer through a
// fresh mount against `curl | gzip -dc` in the same run: the layer
// scripts/bench.sh uses (256 MiB of content; REGFS_BENCH_LARGE_MB for
// another size). The reader is a separate process (cat), as in the
// benchmark; -cpuprofile covers the mount and the registry.
//
//	go test -run '^$' -bench LayerTarCold -benchtime 3x ./fs/mounttest/
func BenchmarkLayerTarCold(b *testing.B) {
	if skipWhy != "" {
		b.Skipf("FUSE unusable: %s", skipWhy)
	}
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
		b.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{layer}})
	if err != nil {
		b.Fatal(err)
	}
	if err := registrytest.NewPusher(reg).PushImage(ctx, "bench/tarcold", img, "latest"); err != nil {
		b.Fatal(err)
	}
	url := reg.URL + "/v2/bench/tarcold/blobs/" + img.Layers[0].Digest.String()
	id := chainIDs(img.DiffIDs)[0]
	var mountT, baseT time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if out, err := exec.Command("sh", "-c", "curl -sSf '"+url+"' | gzip -dc > /dev/null").CombinedOutput(); err != nil {
			b.Skipf("curl | gzip -dc: %v: %s", err, out)
		}
		baseT += time.Since(start)

		mnt, done := mountFor(b, reg.Host, mountOpts{})
		path := filepath.Join(mnt, "bench/tarcold:latest/layers", id, "layer.tar")
		start = time.Now()
		out, err := exec.Command("sh", "-c", "cat '"+path+"' | wc -c").Output()
		mountT += time.Since(start)
		done()
		if err != nil {
			b.Fatalf("cat layer.tar: %v", err)
		}
		if n, _ := strconv.ParseInt(string(out[:len(out)-1]), 10, 64); n != layer.UncompressedSize {
			b.Fatalf("cat layer.tar: got %d bytes, want %d", n, layer.UncompressedSize)
		}
	}
	rate := func(d time.Duration) float64 {
		return float64(layer.UncompressedSize) * float64(b.N) / (1 << 20) / d.Seconds()
	}
	b.ReportMetric(rate(mountT), "cat-MiB/s")
	b.ReportMetric(rate(baseT), "curl|gzip-MiB/s")
	b.ReportMetric(baseT.Seconds()/mountT.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
}
