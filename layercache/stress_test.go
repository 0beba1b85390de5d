package layercache

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Many readers of a few blobs, every kind of Reader, tight memory and disk
// bounds, cancelled callers and closed readers: every byte returned is
// right and the cache ends idle.
func TestStressConcurrentReaders(t *testing.T) {
	const bs = 2048
	srcs := []*fakeSource{
		newFakeSource(keyN(80), 37*bs+11, 80),
		newFakeSource(keyN(81), 20*bs, 81),
		newFakeSource("v1:h:1/"+keyN(82)[7:], 9*bs+1, 82),
	}
	c := newTestCache(t, Options{BlockSize: bs, MemoryBytes: 6 * bs, DiskDir: t.TempDir(), DiskBytes: 25 * (bs + trailerSize), Readahead: 6, MaxParallel: 3, MaxFetchBlocks: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 99))
			for round := 0; round < 4; round++ {
				src := srcs[rnd.IntN(len(srcs))]
				var s blobio.Source = src
				if g%2 == 1 {
					s = &streamingSource{fakeSource: src}
				}
				r := c.OpenWith(s, OpenOptions{Ranged: g%2 == 0, Sequential: g%4 == 0, SkipMemory: g%3 == 0})
				off := rnd.Int64N(src.Size())
				for i := 0; i < 30; i++ {
					if g%5 == 0 || rnd.IntN(4) == 0 {
						off = rnd.Int64N(src.Size())
					}
					n := 1 + rnd.IntN(3*bs)
					p := make([]byte, n)
					ctx, cancel := context.WithCancel(context.Background())
					if rnd.IntN(10) == 0 {
						time.AfterFunc(time.Duration(rnd.IntN(200))*time.Microsecond, cancel)
					}
					got, err := r.ReadAt(ctx, p, off)
					cancel()
					end := min(off+int64(n), src.Size())
					switch {
					case errors.Is(err, context.Canceled):
					case err != nil && err != io.EOF:
						errs <- err
						return
					case !bytes.Equal(p[:got], src.data[off:end]):
						errs <- errors.New("wrong bytes")
						return
					}
					off = end % src.Size()
				}
				r.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitIdle(t, c)
	st := c.Stats()
	if st.Memory.Bytes > 6*bs || st.InFlightFetches != 0 {
		t.Errorf("after the storm: got %d memory bytes, %d fetches in flight", st.Memory.Bytes, st.InFlightFetches)
	}
	if got := dirBytes(t, c.store.disk.dir); got > 25*(bs+trailerSize) {
		t.Errorf("bytes on disk: got %d above the bound %d", got, 25*(bs+trailerSize))
	}
}
