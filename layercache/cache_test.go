package layercache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReadAtExactBytes(t *testing.T) {
	const bs = 4096
	tests := []struct {
		name string
		size int
	}{
		{"smaller than a block", 1000},
		{"exactly one block", bs},
		{"short last block", 10*bs + 123},
		{"whole blocks", 8 * bs},
		{"one byte", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(1), tt.size, uint64(tt.size))
			c := newTestCache(t, Options{BlockSize: bs, MemoryBytes: 4 * bs})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			if got := r.Size(); got != int64(tt.size) {
				t.Fatalf("Size: got %d want %d", got, tt.size)
			}
			rnd := rand.New(rand.NewPCG(1, uint64(tt.size)))
			for i := 0; i < 300; i++ {
				off := rnd.Int64N(int64(tt.size))
				n := 1 + rnd.IntN(3*bs)
				checkRead(t, r, src.data, off, n)
			}
			// Boundaries: across each block edge, the tail, the whole blob.
			for b := int64(bs); b < int64(tt.size); b += bs {
				checkRead(t, r, src.data, b-1, 2)
			}
			checkRead(t, r, src.data, int64(tt.size)-1, 1)
			checkRead(t, r, src.data, 0, tt.size)
			checkRead(t, r, src.data, 0, tt.size+5)
		})
	}
}

func TestReadAtEdges(t *testing.T) {
	src := newFakeSource(keyN(1), 10_000, 7)
	c := newTestCache(t, Options{BlockSize: 4096})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	ctx := context.Background()
	tests := []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantErr error
		anyErr  bool
	}{
		{"at end", 10_000, 10, 0, io.EOF, false},
		{"past end", 20_000, 10, 0, io.EOF, false},
		{"empty read inside", 5, 0, 0, nil, false},
		{"crossing end", 9_990, 20, 10, io.EOF, false},
		{"ending exactly at end", 9_990, 10, 10, nil, false},
		{"negative offset", -1, 10, 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := make([]byte, tt.n)
			n, err := r.ReadAt(ctx, p, tt.off)
			if n != tt.wantN {
				t.Errorf("n: got %d want %d", n, tt.wantN)
			}
			if tt.anyErr {
				if err == nil || err == io.EOF {
					t.Errorf("err: got %v want a real error", err)
				}
				return
			}
			if err != tt.wantErr {
				t.Errorf("err: got %v want %v", err, tt.wantErr)
			}
			if !bytes.Equal(p[:n], src.data[min(tt.off, 10_000):min(tt.off+int64(n), 10_000)]) {
				t.Errorf("got bytes differ from the blob")
			}
		})
	}
}

func TestSingleFlight(t *testing.T) {
	const bs = 4096
	tests := []struct {
		name  string
		opens int // readers are spread over this many Opens of the key
	}{
		{"one reader", 1},
		{"several opens of one key", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(2), 16*bs, 2)
			gate := make(chan struct{})
			src.hook = func(ctx context.Context, off int64, n int) error {
				select {
				case <-gate:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
			readers := make([]*Reader, tt.opens)
			for i := range readers {
				readers[i] = c.OpenWith(src, rangedOpts)
				defer readers[i].Close()
			}
			const n = 64
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					off := int64(3*bs + i*17)
					p := make([]byte, 50)
					if _, err := readers[i%tt.opens].ReadAt(context.Background(), p, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(p, src.data[off:off+50]) {
						errs <- errors.New("wrong bytes")
					}
				}()
			}
			// Wait until all 64 are waiting on the one flight, then release it.
			deadline := time.Now().Add(5 * time.Second)
			for c.Stats().SharedWaits < n-1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := src.calls.Load(); got != 1 {
				t.Errorf("source calls: got %d want 1", got)
			}
			if got := c.Stats().SharedWaits; got != n-1 {
				t.Errorf("shared waits: got %d want %d", got, n-1)
			}
		})
	}
}

func TestOneFetchPerMissingRun(t *testing.T) {
	const bs = 1024
	tests := []struct {
		name      string
		maxFetch  int
		warm      []int64 // blocks read (and cached) first
		readFrom  int64   // block
		readTo    int64   // block, inclusive
		wantSpans []span  // in blocks: {first block, block count}
	}{
		{"all missing", 8, nil, 0, 5, []span{{0, 6}}},
		{"holes", 16, []int64{3, 6}, 0, 9, []span{{0, 3}, {4, 2}, {7, 3}}},
		{"all cached", 8, []int64{1, 2}, 1, 2, nil},
		{"run split at MaxFetchBlocks", 4, nil, 0, 9, []span{{0, 4}, {4, 4}, {8, 2}}},
		{"run ending in the short last block", 16, []int64{0}, 0, 10, []span{{1, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(3), 10*bs+100, 3) // 11 blocks, the last short
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1, MaxFetchBlocks: tt.maxFetch, MaxParallel: 8})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			for _, b := range tt.warm {
				checkRead(t, r, src.data, b*bs, 1)
			}
			before := len(src.spans())
			off := tt.readFrom * bs
			end := min((tt.readTo+1)*bs, r.Size())
			checkRead(t, r, src.data, off, int(end-off))
			got := src.spans()[before:]
			var want []span
			for _, s := range tt.wantSpans {
				o := s.off * bs
				want = append(want, span{o, min((s.off+s.n)*bs, r.Size()) - o})
			}
			if !sameSpans(got, want) {
				t.Errorf("source reads: got %v want %v", got, want)
			}
		})
	}
}

// sameSpans compares as sets: parallel fetches may arrive in any order.
func sameSpans(got, want []span) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[span]int{}
	for _, s := range got {
		seen[s]++
	}
	for _, s := range want {
		if seen[s] == 0 {
			return false
		}
		seen[s]--
	}
	return true
}

func TestMemoryBound(t *testing.T) {
	const bs = 4096
	tests := []struct {
		name  string
		bound int64
	}{
		{"five and a half blocks", 5*bs + bs/2},
		{"less than one block", bs / 2},
		{"exactly three blocks", 3 * bs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(keyN(4), 40*bs+77, 4)
			c := newTestCache(t, Options{BlockSize: bs, MemoryBytes: tt.bound, Readahead: 4})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			rnd := rand.New(rand.NewPCG(4, 4))
			for i := 0; i < 400; i++ {
				var off int64
				if i%3 == 0 {
					off = int64(i/3) * 1000 % r.Size() // some sequential runs for readahead
				} else {
					off = rnd.Int64N(r.Size())
				}
				checkRead(t, r, src.data, off, 1+rnd.IntN(2*bs))
				if st := c.Stats(); st.Memory.Bytes > tt.bound {
					t.Fatalf("memory bytes: got %d, above the bound %d", st.Memory.Bytes, tt.bound)
				}
			}
			waitIdle(t, c)
			st := c.Stats()
			if st.Memory.Bytes > tt.bound {
				t.Fatalf("memory bytes: got %d, above the bound %d", st.Memory.Bytes, tt.bound)
			}
			if st.Memory.Evictions == 0 {
				t.Errorf("evictions: got 0 want > 0")
			}
			// The count must be the sum of what the LRU holds.
			var sum int64
			for i := range c.store.mem.shards {
				sh := &c.store.mem.shards[i]
				sh.mu.Lock()
				for _, v := range sh.lru.Values() {
					sum += int64(len(v))
				}
				sh.mu.Unlock()
			}
			if sum != st.Memory.Bytes {
				t.Errorf("memory bytes: counted %d, LRU holds %d", st.Memory.Bytes, sum)
			}
		})
	}
}

func TestReadahead(t *testing.T) {
	const bs = 4096
	src := newFakeSource(keyN(5), 64*bs, 5)
	tests := []struct {
		name      string
		offsets   []int64 // each read is 1000 bytes at this offset
		wantAhead bool
	}{
		{"sequential from the start", seqOffsets(0, 8*bs, 1000), true},
		{"sequential from the middle", seqOffsets(20*bs, 8*bs, 1000), true},
		{"random blocks", []int64{10 * bs, 3 * bs, 30 * bs, 17 * bs, 50*bs + 5, 40 * bs, 25 * bs, 60 * bs, 13 * bs}, false},
		{"same block again and again", []int64{7 * bs, 7*bs + 100, 7*bs + 2000, 7 * bs}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src.calls.Store(0)
			c := newTestCache(t, Options{BlockSize: bs, Readahead: 8})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			for _, off := range tt.offsets {
				checkRead(t, r, src.data, off, 1000)
			}
			waitIdle(t, c)
			st := c.Stats()
			if got := st.ReadaheadFetches > 0; got != tt.wantAhead {
				t.Errorf("readahead: got %d readahead fetches, want any: %v", st.ReadaheadFetches, tt.wantAhead)
			}
			if !tt.wantAhead && st.SourceRequests != int64(len(distinctBlocks(tt.offsets, bs))) {
				t.Errorf("source requests: got %d want %d (one per distinct block)", st.SourceRequests, len(distinctBlocks(tt.offsets, bs)))
			}
		})
	}
}

func TestReadaheadServesSequentialReader(t *testing.T) {
	const bs = 4096
	src := newFakeSource(keyN(6), 100*bs, 6)
	c := newTestCache(t, Options{BlockSize: bs, Readahead: 8, MaxParallel: 4})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	for off := int64(0); off < r.Size(); off += 512 {
		checkRead(t, r, src.data, off, 512)
	}
	waitIdle(t, c)
	st := c.Stats()
	if st.BytesFetched != r.Size() {
		t.Errorf("bytes fetched: got %d want %d (each block once)", st.BytesFetched, r.Size())
	}
	// Readahead fetches pieces of several blocks, so far fewer requests
	// than blocks.
	if st.SourceRequests >= 100 {
		t.Errorf("source requests: got %d want < 100 blocks", st.SourceRequests)
	}
}

func seqOffsets(start, length, step int64) []int64 {
	var out []int64
	for o := start; o < start+length; o += step {
		out = append(out, o)
	}
	return out
}

func distinctBlocks(offs []int64, bs int64) map[int64]bool {
	m := map[int64]bool{}
	for _, o := range offs {
		m[o/bs] = true
		m[(o+999)/bs] = true
	}
	return m
}

var errBoom = errors.New("boom")

func TestSourceErrorsPropagateAndAreNotCached(t *testing.T) {
	const bs = 1024
	tests := []struct {
		name    string
		fail    func(p []byte) (int, error) // the first call's behaviour
		wantIs  error
		wantMsg string
	}{
		{"error", func(p []byte) (int, error) { return 0, errBoom }, errBoom, "boom"},
		{"short without error", func(p []byte) (int, error) { return len(p) - 1, nil }, ErrShortRead, "short read"},
		{"short with EOF", func(p []byte) (int, error) { return len(p) / 2, io.EOF }, ErrShortRead, "short read"},
		{"unexpected EOF", func(p []byte) (int, error) { return 3, io.ErrUnexpectedEOF }, io.ErrUnexpectedEOF, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := newFakeSource(keyN(7), 5*bs, 7)
			src := &scriptedSource{fakeSource: inner, first: tt.fail}
			c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
			r := c.OpenWith(src, rangedOpts)
			defer r.Close()
			p := make([]byte, 2*bs)
			_, err := r.ReadAt(context.Background(), p, bs)
			if err == nil || err == io.EOF {
				t.Fatalf("ReadAt: got err %v, want a fetch error", err)
			}
			if errors.Is(err, io.EOF) {
				t.Errorf("ReadAt: got err %v, which callers would take for the end of the blob", err)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("ReadAt: got err %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), keyN(7)) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ReadAt: got err %q, want the key and %q in it", err, tt.wantMsg)
			}
			if st := c.Stats(); st.Memory.Blocks != 0 || st.SourceErrors != 1 {
				t.Errorf("after the failure: got %d cached blocks, %d source errors; want 0 and 1", st.Memory.Blocks, st.SourceErrors)
			}
			// Not cached: the next read asks the source again and succeeds.
			checkRead(t, r, inner.data, bs, 2*bs)
			if got := inner.calls.Load(); got != 2 {
				t.Errorf("source calls: got %d want 2", got)
			}
		})
	}
}

// scriptedSource replaces the first ReadAt with a scripted result.
type scriptedSource struct {
	*fakeSource
	first func(p []byte) (int, error)
}

func (s *scriptedSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if s.calls.Add(1) == 1 {
		n, err := s.first(p)
		copy(p[:n], s.data[off:])
		return n, err
	}
	s.calls.Add(-1)
	return s.fakeSource.ReadAt(ctx, p, off)
}

func TestCancelledCallerReturnsWhileFetchCompletes(t *testing.T) {
	const bs = 4096
	src := newFakeSource(keyN(8), 4*bs, 8)
	started := make(chan struct{}, 1)
	gate := make(chan struct{})
	src.hook = func(ctx context.Context, off int64, n int) error {
		started <- struct{}{}
		<-gate // the fetch is detached from callers: ignore ctx here on purpose
		return nil
	}
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()

	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(ctxA, make([]byte, 10), bs)
		errA <- err
	}()
	<-started
	resB := make(chan error, 1)
	pB := make([]byte, 100)
	go func() {
		_, err := r.ReadAt(context.Background(), pB, bs+5)
		resB <- err
	}()
	cancelA()
	// A must return while the fetch is still blocked on the gate.
	if err := <-errA; err != context.Canceled {
		t.Errorf("cancelled reader: got %v want %v", err, context.Canceled)
	}
	select {
	case err := <-resB:
		t.Fatalf("reader B returned before the fetch completed: %v", err)
	default:
	}
	close(gate)
	if err := <-resB; err != nil {
		t.Fatalf("reader B: %v", err)
	}
	if !bytes.Equal(pB, src.data[bs+5:bs+105]) {
		t.Errorf("reader B: got bytes differ from the blob")
	}
	if got := src.calls.Load(); got != 1 {
		t.Errorf("source calls: got %d want 1", got)
	}
	waitIdle(t, c)
	if st := c.Stats(); st.Memory.Blocks != 1 {
		t.Errorf("cached blocks: got %d want 1 (the shared fetch finished)", st.Memory.Blocks)
	}
}

func TestFetchTimeout(t *testing.T) {
	src := newFakeSource(keyN(9), 4096, 9)
	src.hook = func(ctx context.Context, off int64, n int) error {
		<-ctx.Done()
		return ctx.Err()
	}
	c := newTestCache(t, Options{BlockSize: 1024, FetchTimeout: 20 * time.Millisecond})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	_, err := r.ReadAt(context.Background(), make([]byte, 10), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadAt: got err %v want %v", err, context.DeadlineExceeded)
	}
}

func TestClose(t *testing.T) {
	const bs = 1024
	src := newFakeSource(keyN(10), 8*bs, 10)
	blocked := make(chan struct{}, 1)
	src.hook = func(ctx context.Context, off int64, n int) error {
		if off == 5*bs {
			blocked <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	c, err := New(Options{BlockSize: bs, Readahead: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	r := c.OpenWith(src, rangedOpts)
	checkRead(t, r, src.data, 0, 10)

	waitErr := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(context.Background(), make([]byte, 10), 5*bs)
		waitErr <- err
	}()
	<-blocked
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-waitErr; !errors.Is(err, ErrClosed) {
		t.Errorf("read waiting during Close: got %v want %v", err, ErrClosed)
	}
	if _, err := r.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: got %v want %v", err, ErrClosed)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := c.Stats().InFlightFetches; got != 0 {
		t.Errorf("in-flight fetches after Close: got %d want 0", got)
	}

	c2 := newTestCache(t, Options{BlockSize: bs})
	r2 := c2.Open(newFakeSource(keyN(11), 100, 1))
	r2.Close()
	if _, err := r2.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Reader.Close: got %v want %v", err, ErrClosed)
	}
}

// A reader that joined a readahead fetch of another Reader must not fail
// when that Reader closes and its readahead is cancelled: it fetches again.
func TestClosedReaderReadaheadDoesNotFailOthers(t *testing.T) {
	const bs = 1024
	src := newFakeSource(keyN(12), 16*bs, 12)
	var once sync.Once
	raBlocked := make(chan struct{})
	src.hook = func(ctx context.Context, off int64, n int) error {
		if off == 1*bs {
			first := false
			once.Do(func() { first = true })
			if first {
				close(raBlocked)
				<-ctx.Done()
				return ctx.Err()
			}
		}
		return nil
	}
	c := newTestCache(t, Options{BlockSize: bs, Readahead: 4, MaxParallel: 4})
	r1 := c.OpenWith(src, OpenOptions{Ranged: true, Sequential: true})
	checkRead(t, r1, src.data, 0, 100) // block 0, starts readahead at block 1
	<-raBlocked

	r2 := c.OpenWith(src, rangedOpts)
	defer r2.Close()
	done := make(chan error, 1)
	p := make([]byte, 100)
	go func() {
		_, err := r2.ReadAt(context.Background(), p, bs+10)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().SharedWaits == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r1.Close()
	if err := <-done; err != nil {
		t.Fatalf("reader 2 after reader 1 closed: %v", err)
	}
	if !bytes.Equal(p, src.data[bs+10:bs+110]) {
		t.Errorf("reader 2: got bytes differ from the blob")
	}
	// The cancelled readahead fetch really ended (it would otherwise hang
	// until FetchTimeout).
	waitIdle(t, c)
}

func TestSkipMemoryReader(t *testing.T) {
	const bs = 4096
	src := newFakeSource(keyN(13), 50*bs+10, 13)
	c := newTestCache(t, Options{BlockSize: bs, Readahead: 8})
	warm := c.OpenWith(src, rangedOpts)
	checkRead(t, warm, src.data, 5*bs, 1) // block 5 in memory (a jump: no readahead)
	warm.Close()
	waitIdle(t, c)
	fetchedBefore := c.Stats().BytesFetched

	r := c.OpenWith(src, OpenOptions{Ranged: true, Sequential: true, SkipMemory: true})
	defer r.Close()
	for off := int64(0); off < r.Size(); off += 1000 {
		checkRead(t, r, src.data, off, 1000)
	}
	waitIdle(t, c)
	st := c.Stats()
	if st.Memory.Blocks != 1 {
		t.Errorf("memory blocks: got %d want 1 (only the warm block)", st.Memory.Blocks)
	}
	if got, want := st.BytesFetched-fetchedBefore, r.Size()-bs; got != want {
		t.Errorf("bytes fetched by the one-pass reader: got %d want %d (each missing block once)", got, want)
	}
	r.priv.mu.Lock()
	kept := len(r.priv.m)
	r.priv.mu.Unlock()
	if limit := 8 + DefaultMaxFetchBlocks + 2; kept > limit {
		t.Errorf("private blocks: got %d want <= %d", kept, limit)
	}
}

func TestNoMemoryTier(t *testing.T) {
	const bs = 1024
	src := newFakeSource(keyN(14), 20*bs, 14)
	c := newTestCache(t, Options{BlockSize: bs, MemoryBytes: -1})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	for off := int64(0); off < r.Size(); off += 300 {
		checkRead(t, r, src.data, off, 300)
	}
	waitIdle(t, c)
	if st := c.Stats(); st.Memory.Bytes != 0 || st.BytesFetched != r.Size() {
		t.Errorf("no memory tier: got %d memory bytes, %d fetched; want 0 and %d", st.Memory.Bytes, st.BytesFetched, r.Size())
	}
}

func TestBadOptions(t *testing.T) {
	tests := []Options{
		{BlockSize: -1},
		{BlockSize: 1 << 40},
		{DiskBytes: -5},
		{DiskDir: "/proc/self/nonexistent/dir"},
	}
	for _, o := range tests {
		if c, err := New(o); err == nil {
			c.Close()
			t.Errorf("New(%+v): got no error", o)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	const bs = 1024
	src := newFakeSource(keyN(15), 3*bs, 15)
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: t.TempDir(), Readahead: -1})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	checkRead(t, r, src.data, 0, 3*bs)
	checkRead(t, r, src.data, 0, 3*bs)
	waitIdle(t, c)
	st := c.Stats()
	want := Stats{SourceRequests: 1, BytesFetched: 3 * bs, BytesServed: 6 * bs}
	if st.SourceRequests != want.SourceRequests || st.BytesFetched != want.BytesFetched || st.BytesServed != want.BytesServed {
		t.Errorf("stats: got requests %d fetched %d served %d; want %d %d %d", st.SourceRequests, st.BytesFetched, st.BytesServed, want.SourceRequests, want.BytesFetched, want.BytesServed)
	}
	if st.Memory.Hits != 3 || st.Memory.Misses != 3 || st.Disk.Misses != 3 || st.Disk.Writes != 3 {
		t.Errorf("tier stats: got mem hits %d misses %d, disk misses %d writes %d; want 3 3 3 3", st.Memory.Hits, st.Memory.Misses, st.Disk.Misses, st.Disk.Writes)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"source_requests":1`, `"bytes_fetched":3072`, `"in_flight_fetches":0`, `"memory":{"hits":3`, `"disk":{"dir":`, `"evictions":0`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("stats JSON %s: missing %s", b, field)
		}
	}
}

// Two Sources that claim one key with different sizes must give an error,
// never bytes of the wrong length.
func TestSizeMismatchIsAnError(t *testing.T) {
	const bs = 1024
	a := newFakeSource(keyN(16), 2*bs+100, 16)
	b := &fakeSource{key: a.key, data: a.data[:2*bs+50]}
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
	ra, rb := c.OpenWith(a, rangedOpts), c.OpenWith(b, rangedOpts)
	defer ra.Close()
	defer rb.Close()
	checkRead(t, ra, a.data, 0, len(a.data))
	for _, off := range []int64{2 * bs, 0} {
		if _, err := rb.ReadAt(context.Background(), make([]byte, 2*bs+50-off), off); err == nil || err == io.EOF {
			t.Errorf("read at %d with a conflicting size: got err %v want an error", off, err)
		}
	}
	waitIdle(t, c)
}
