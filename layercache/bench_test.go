package layercache

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkHit: reads served from a block already in memory.
func BenchmarkHit(b *testing.B) {
	for _, size := range []int{4 << 10, 128 << 10, 1 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			src := newFakeSource(keyN(1), 64<<20, 1)
			c := newTestCache(b, Options{})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			ctx := context.Background()
			p := make([]byte, size)
			// Warm 4 blocks; read within them at block-aligned offsets.
			if _, err := r.ReadAt(ctx, make([]byte, 4<<20), 10<<20); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				off := int64(10<<20) + int64(i%(4<<20/size))*int64(size)
				if _, err := r.ReadAt(ctx, p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHitParallel: the hit path under concurrent readers.
func BenchmarkHitParallel(b *testing.B) {
	src := newFakeSource(keyN(1), 16<<20, 1)
	c := newTestCache(b, Options{})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	ctx := context.Background()
	if _, err := r.ReadAt(ctx, make([]byte, 16<<20), 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4 << 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4<<10)
		i := 0
		for pb.Next() {
			i++
			if _, err := r.ReadAt(ctx, p, int64(i*7919*4096)%(16<<20-4096)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMiss: every read misses memory (the bound holds 2 of the 64
// blocks cycled through) and is fetched from a source that only copies.
func BenchmarkMiss(b *testing.B) {
	for _, bs := range []int64{64 << 10, 1 << 20} {
		b.Run("block="+byteSize(int(bs)), func(b *testing.B) {
			src := newFakeSource(keyN(2), int(64*bs), 2)
			c := newTestCache(b, Options{BlockSize: bs, MemoryBytes: 2 * bs, Readahead: -1})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			ctx := context.Background()
			p := make([]byte, 4096)
			b.SetBytes(bs) // bytes moved per miss
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := r.ReadAt(ctx, p, int64(i%64)*bs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSequentialCold: a cold sequential pass in 128 KiB reads (FUSE
// sized) with readahead over a source that only copies: the cache's own
// overhead per byte on the path that matters most, with a plain Source and
// with a streaming one (one copy less per byte).
func BenchmarkSequentialCold(b *testing.B) {
	const size = 64 << 20
	plain := newFakeSource(keyN(3), size, 3)
	for _, tt := range []struct {
		name string
		src  blobio.Source
		opts OpenOptions
	}{{"ReadAt", plain, rangedOpts}, {"Stream", &streamingSource{fakeSource: plain}, OpenOptions{}}} {
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			p := make([]byte, 128<<10)
			ctx := context.Background()
			for b.Loop() {
				c, err := New(Options{Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				r := c.OpenWith(tt.src, tt.opts)
				for off := int64(0); off < size; off += int64(len(p)) {
					if _, err := r.ReadAt(ctx, p, off); err != nil {
						b.Fatal(err)
					}
				}
				c.Close()
			}
		})
	}
}

// BenchmarkDiskHit: blocks read from a warm disk tier (page cache) into a
// cache whose memory holds 2 blocks.
func BenchmarkDiskHit(b *testing.B) {
	const bs = 1 << 20
	dir := b.TempDir()
	src := newFakeSource(keyN(4), 32*bs, 4)
	warm := newTestCache(b, Options{DiskDir: dir})
	r := warm.OpenWith(src, rangedOpts)
	if _, err := r.ReadAt(context.Background(), make([]byte, 32*bs), 0); err != nil {
		b.Fatal(err)
	}
	warm.Close()
	warmCalls := src.calls.Load()
	c := newTestCache(b, Options{DiskDir: dir, MemoryBytes: 2 * bs, Readahead: -1})
	r = c.OpenWith(src, rangedOpts)
	defer r.Close()
	p := make([]byte, 4096)
	ctx := context.Background()
	b.SetBytes(bs)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := r.ReadAt(ctx, p, int64(i%32)*bs); err != nil {
			b.Fatal(err)
		}
	}
	if got := src.calls.Load(); got != warmCalls {
		b.Fatalf("source calls: got %d want %d (the warm-up only)", got, warmCalls)
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkSequentialLatency: a cold sequential pass over a source that
// costs 2 ms per request before streaming at memory speed, the shape of a
// registry round trip: readahead and parallel fetches hide the latency.
func BenchmarkSequentialLatency(b *testing.B) {
	const size = 64 << 20
	for _, tt := range []struct {
		name      string
		readahead int
	}{{"readahead=off", -1}, {"readahead=16", 16}} {
		b.Run(tt.name, func(b *testing.B) {
			src := newFakeSource(keyN(5), size, 5)
			src.hook = func(ctx context.Context, off int64, n int) error {
				time.Sleep(2 * time.Millisecond)
				return nil
			}
			b.SetBytes(size)
			p := make([]byte, 128<<10)
			ctx := context.Background()
			for b.Loop() {
				c, err := New(Options{Logger: quietLogger(), Readahead: tt.readahead})
				if err != nil {
					b.Fatal(err)
				}
				r := c.OpenWith(src, rangedOpts)
				for off := int64(0); off < size; off += int64(len(p)) {
					if _, err := r.ReadAt(ctx, p, off); err != nil {
						b.Fatal(err)
					}
				}
				c.Close()
			}
		})
	}
}
