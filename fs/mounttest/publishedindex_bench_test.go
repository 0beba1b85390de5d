package mounttest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// BenchmarkPublishedIndexFirstRead reads one small file of a 400+ MiB gzip
// layer whose index was published (regfs index push) on a fresh mount
// (empty caches), and, interleaved with it, the same read on a fresh mount
// that does not look for published indexes (the full index pass first). It
// reports, as medians over the rounds, the bytes the registry served for
// each (blobs, the index among them, and everything: manifests, the
// referrers lookup) against the layer blob's size, the times and their
// ratio, and the published index's size against the blob's.
//
//	go test -run '^$' -bench PublishedIndexFirstRead -benchtime 3x ./fs/mounttest/
func BenchmarkPublishedIndexFirstRead(b *testing.B) {
	if skipWhy != "" {
		b.Skipf("FUSE unusable: %s", skipWhy)
	}
	layer, err := registrytest.BuildLargeLayer(13, 640<<20)
	if err != nil {
		b.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{layer}})
	if err != nil {
		b.Fatal(err)
	}
	const repo = "test/published-bench"
	if err := registrytest.NewPusher(reg).PushImage(context.Background(), repo, img, "latest"); err != nil {
		b.Fatal(err)
	}
	pushStart := time.Now()
	indexPush(b, reg.Host, repo+":latest")
	b.Logf("regfs index push (one pass over the layer, then the push): %v", time.Since(pushStart))
	var refs ocispec.Index
	getJSON(b, reg, "/v2/"+repo+"/manifests/"+registry.ReferrersTag(img.Digest), ocispec.MediaTypeImageIndex, &refs)
	var art ocispec.Manifest
	getJSON(b, reg, "/v2/"+repo+"/manifests/"+refs.Manifests[0].Digest.String(), ocispec.MediaTypeImageManifest, &art)
	indexSize := art.Layers[0].Size
	indexBlob := getJSON(b, reg, "/v2/"+repo+"/blobs/"+art.Layers[0].Digest.String(), "*/*", nil)
	payload := 24 + int64(binary.LittleEndian.Uint64(indexBlob[12:])) // header and entries: what a reader fetches besides one window

	var small registrytest.Entry
	for _, e := range layer.Entries {
		if e.Type == tar.TypeReg && e.Size() > 1<<10 && e.Size() < 32<<10 {
			small = e // the first: the pass reaches it early, so the pass's time is all its own
		}
	}
	type sample struct {
		took          time.Duration
		blobs, served int64
	}
	var pub, pass []sample
	read := func(published bool) sample {
		mnt, done := mountFor(b, reg.Host, mountOpts{published: published})
		defer done()
		reg.ResetStats()
		start := time.Now()
		got, err := os.ReadFile(filepath.Join(mnt, repo+":latest/rootfs", small.Name))
		s := sample{took: time.Since(start)}
		st := reg.Stats()
		s.blobs, s.served = st.BlobBytesServed, st.BytesServed
		if err != nil || !bytes.Equal(got, small.Data()) {
			b.Fatalf("%s: %d bytes, %v; want the layer's %d", small.Name, len(got), err, small.Size())
		}
		return s
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pass = append(pass, read(false))
		pub = append(pub, read(true))
	}
	b.StopTimer()
	median := func(ss []sample, f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	ms := func(s sample) float64 { return float64(s.took.Microseconds()) / 1000 }
	blob := float64(layer.Size)
	for _, s := range append(pub, pass...) {
		b.Logf("round: %.1f ms, %d blob bytes, %d bytes served", ms(s), s.blobs, s.served)
	}
	b.ReportMetric(blob/(1<<20), "blob-MiB")
	b.ReportMetric(float64(indexSize)/(1<<10), "index-KiB")
	b.ReportMetric(float64(payload)/(1<<10), "index-payload-KiB")
	b.ReportMetric(100*float64(indexSize)/blob, "index-%-of-blob")
	b.ReportMetric(100*median(pub, func(s sample) float64 { return float64(s.blobs) })/blob, "published-blob-fetched-%")
	b.ReportMetric(100*median(pub, func(s sample) float64 { return float64(s.served) })/blob, "published-all-served-%")
	b.ReportMetric(median(pub, ms), "published-first-read-ms")
	b.ReportMetric(median(pass, ms), "pass-first-read-ms")
	b.ReportMetric(median(pass, ms)/median(pub, ms), "speedup-x")
	spread := func(ss []sample) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = ms(s)
		}
		return slices.Max(v) - slices.Min(v)
	}
	b.ReportMetric(spread(pub), "published-spread-ms")
	b.ReportMetric(spread(pass), "pass-spread-ms")
}
