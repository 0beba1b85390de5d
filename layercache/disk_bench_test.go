package layercache

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkDiskSequential: a sequential pass over a blob whose blocks are
// all in the disk tier (page-cache warm), through a fresh Cache each time:
// the "re-read on a fresh mount, same --cache-dir" case. Reads are 1 MiB
// Slices, as FUSE sends them; with readers=N, N goroutines take the next
// offset in turn, like the kernel's readahead keeping several READs in
// flight. The source streams, as a registry blob does, and must never
// be called.
func BenchmarkDiskSequential(b *testing.B) {
	const (
		bs   = 1 << 20
		size = 64 << 20
	)
	dir := b.TempDir()
	src := &streamingSource{fakeSource: newFakeSource(keyN(6), size, 6)}
	warm := newTestCache(b, Options{DiskDir: dir})
	r := warm.Open(src)
	if _, err := r.ReadAt(context.Background(), make([]byte, size), 0); err != nil {
		b.Fatal(err)
	}
	r.Close()
	warm.Close()
	warmCalls := src.calls.Load()
	for _, readers := range []int{1, 4} {
		b.Run("readers="+strconv.Itoa(readers), func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				c, err := New(Options{DiskDir: dir, Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				r := c.Open(src)
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, readers)
				for range readers {
					wg.Go(func() {
						for {
							off := next.Add(bs) - bs
							if off >= size {
								return
							}
							vec, release, err := r.Slices(ctx, off, bs)
							n := 0
							for _, v := range vec {
								n += len(v)
							}
							release()
							if err == nil && n != bs {
								err = errShort(n)
							}
							if err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				r.Close()
				c.Close()
			}
			if got := src.calls.Load(); got != warmCalls {
				b.Fatalf("source calls: got %d want %d (the warm-up only)", got, warmCalls)
			}
		})
	}
}

type errShort int

func (e errShort) Error() string { return "short read: " + strconv.Itoa(int(e)) + " bytes" }
