package layercache

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Defaults for the zero values of Options.
const (
	DefaultBlockSize      = 1 << 20
	DefaultMemoryBytes    = 512 << 20
	DefaultDiskBytes      = 10 << 30
	DefaultReadahead      = 16
	DefaultMaxParallel    = 4
	DefaultMaxFetchBlocks = 8
	DefaultFetchTimeout   = 2 * time.Minute
)

var (
	// ErrClosed is returned by reads on a closed Cache or Reader.
	ErrClosed = errors.New("layercache: closed")
	// ErrShortRead means the Source returned fewer bytes than a whole block
	// run without an error; such data is never cached.
	ErrShortRead = errors.New("layercache: short read from source")
)

// Options configures a Cache. The zero value of every field means its
// documented default.
type Options struct {
	// BlockSize is the unit of caching and of alignment of every fetch.
	// Default 1 MiB. A disk tier keeps blocks of different sizes apart.
	BlockSize int64
	// MemoryBytes bounds the bytes of blocks held by the memory LRU (keyed
	// by (blob key, block index)). Default 512 MiB; negative disables the
	// memory tier (each Reader then keeps only the blocks it is on).
	// Blocks being fetched, and blocks a reader is copying, are not counted.
	MemoryBytes int64
	// DiskDir is the directory of the disk tier; "" means no disk tier.
	DiskDir string
	// DiskBytes bounds the disk tier (blocks, PutFile files, trailers).
	// Default 10 GiB.
	DiskBytes int64
	// Readahead is the largest number of blocks fetched ahead of a sequential
	// reader; the window starts at 2 and doubles each time the reader moves
	// on to the next block, and collapses on a random jump. Default 16;
	// negative disables readahead.
	Readahead int
	// MaxParallel bounds the ranged fetches in flight started by one Reader
	// (its own misses and its readahead). Default 4.
	MaxParallel int
	// MaxFetchBlocks is the largest run of blocks one ranged fetch covers;
	// longer missing runs become several fetches. Default 8.
	MaxFetchBlocks int
	// FetchTimeout bounds one fetch. A fetch may be shared by several
	// readers, so it runs under its own context (cancelled only by this
	// timeout, Cache.Close, or for readahead by Reader.Close), detached from
	// any one caller. Default 2 minutes.
	FetchTimeout time.Duration
	// Logger receives warnings (disk write failures, corrupt disk blocks)
	// and debug lines. Default logrus.StandardLogger().
	Logger logrus.FieldLogger
}

func (o Options) withDefaults() (Options, error) {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 0 || o.BlockSize > math.MaxInt32 {
		return o, fmt.Errorf("layercache: block size %d out of range", o.BlockSize)
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.DiskBytes == 0 {
		o.DiskBytes = DefaultDiskBytes
	}
	if o.DiskBytes < 0 {
		return o, fmt.Errorf("layercache: disk bound %d is negative", o.DiskBytes)
	}
	if o.Readahead == 0 {
		o.Readahead = DefaultReadahead
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = DefaultMaxParallel
	}
	if o.MaxFetchBlocks <= 0 {
		o.MaxFetchBlocks = DefaultMaxFetchBlocks
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	return o, nil
}

// Cache is a block cache shared by every Reader it opens. Safe for
// concurrent use.
type Cache struct {
	opts   Options
	bs     int64
	log    logrus.FieldLogger
	ctx    context.Context // cancelled by Close; parent of every fetch
	cancel context.CancelFunc
	disk   *diskTier // nil without DiskDir

	mu       sync.Mutex // guards closed, inflight, ids; taken before a memShard.mu or Reader.privMu
	closed   bool
	mem      *memTier // nil when the memory tier is off; lock order c.mu → shard
	inflight map[blockKey]*flight
	ids      map[string]uint64 // blob key → small id, so block keys hash fast
	wg       sync.WaitGroup    // fetch goroutines; Add only under mu while !closed

	st counters
}

type blockKey struct {
	blob  uint64
	index int64
}

// blob is one Source as one Reader sees it.
type blob struct {
	src     blobio.Source
	stream  bool // multi-block runs may be read with src.Open (not OpenOptions.Ranged)
	key     string
	id      uint64
	size    int64
	nblocks int64
}

type counters struct {
	sourceRequests, sourceErrors, bytesFetched, bytesServed atomic.Int64
	inFlight, sharedWaits, readaheadFetches                 atomic.Int64
	memMisses                                               atomic.Int64
}

// New makes a Cache. With DiskDir set it creates the directory if needed
// and indexes the blocks already there.
func New(opts Options) (*Cache, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		opts:     opts,
		bs:       opts.BlockSize,
		log:      opts.Logger,
		ctx:      ctx,
		cancel:   cancel,
		inflight: make(map[blockKey]*flight),
		ids:      make(map[string]uint64),
	}
	if opts.MemoryBytes > 0 {
		c.mem = newMemTier(opts.MemoryBytes, opts.BlockSize)
	}
	if opts.DiskDir != "" {
		c.disk, err = openDiskTier(opts.DiskDir, opts.DiskBytes, opts.Logger)
		if err != nil {
			cancel()
			return nil, err
		}
	}
	return c, nil
}

// Close cancels every fetch and readahead, waits for them and for pending
// disk writes, and makes later reads fail with ErrClosed. Idempotent.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	if c.mem != nil {
		c.mem.purge()
	}
	return nil
}

// Stats is a snapshot of the cache's counters; it is printed as JSON in
// `.regfs/stats`. Block counts are per block, byte counts are payload bytes.
type Stats struct {
	SourceRequests   int64 `json:"source_requests"`   // ranged reads sent to Sources
	SourceErrors     int64 `json:"source_errors"`     // of which failed or came back short
	BytesFetched     int64 `json:"bytes_fetched"`     // bytes received from Sources
	BytesServed      int64 `json:"bytes_served"`      // bytes returned by Reader.ReadAt
	InFlightFetches  int64 `json:"in_flight_fetches"` // Source reads running now
	SharedWaits      int64 `json:"shared_waits"`      // block misses that joined a fetch already in flight
	ReadaheadFetches int64 `json:"readahead_fetches"` // Source reads started by readahead

	Memory MemoryStats `json:"memory"`
	Disk   DiskStats   `json:"disk"`
}

// MemoryStats describes the memory tier.
type MemoryStats struct {
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Evictions  int64 `json:"evictions"`
	Blocks     int64 `json:"blocks"`
	Bytes      int64 `json:"bytes"`
	LimitBytes int64 `json:"limit_bytes"`
}

// DiskStats describes the disk tier; all zero when there is none.
type DiskStats struct {
	Dir         string `json:"dir,omitempty"`
	Hits        int64  `json:"hits"`
	Misses      int64  `json:"misses"`
	Evictions   int64  `json:"evictions"`
	Writes      int64  `json:"writes"`
	WriteErrors int64  `json:"write_errors"`
	Corrupt     int64  `json:"corrupt"` // files found torn or garbled, removed
	Files       int64  `json:"files"`   // blocks and PutFile files known to this Cache
	Bytes       int64  `json:"bytes"`   // their size on disk
	LimitBytes  int64  `json:"limit_bytes"`
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		SourceRequests:   c.st.sourceRequests.Load(),
		SourceErrors:     c.st.sourceErrors.Load(),
		BytesFetched:     c.st.bytesFetched.Load(),
		BytesServed:      c.served(),
		InFlightFetches:  c.st.inFlight.Load(),
		SharedWaits:      c.st.sharedWaits.Load(),
		ReadaheadFetches: c.st.readaheadFetches.Load(),
	}
	if c.mem != nil {
		s.Memory = c.mem.stats()
	}
	s.Memory.Misses = c.st.memMisses.Load()
	if c.disk != nil {
		s.Disk = c.disk.stats()
	}
	return s
}

// BlockSize is the cache's block size in bytes.
func (c *Cache) BlockSize() int64 { return c.bs }

func (c *Cache) newBlob(src blobio.Source, stream bool) *blob {
	key, size := src.Key(), src.Size()
	c.mu.Lock()
	id, ok := c.ids[key]
	if !ok {
		id = uint64(len(c.ids) + 1)
		c.ids[key] = id
	}
	c.mu.Unlock()
	b := &blob{src: src, stream: stream, key: key, id: id, size: size}
	if size > 0 {
		b.nblocks = (size + c.bs - 1) / c.bs
	}
	return b
}

// blockLen is the length of block i of b: BlockSize, or less for the last.
func (c *Cache) blockLen(b *blob, i int64) int64 {
	return min(c.bs, b.size-i*c.bs)
}

func (c *Cache) memGet(k blockKey, peek bool) ([]byte, bool) {
	if c.mem == nil {
		return nil, false
	}
	return c.mem.get(k, peek)
}

func (c *Cache) memContains(k blockKey) bool {
	return c.mem != nil && c.mem.contains(k)
}

func (c *Cache) memAdd(k blockKey, d []byte) {
	if c.mem != nil {
		c.mem.add(k, d)
	}
}

func (c *Cache) addServed(k blockKey, n int) {
	if c.mem != nil {
		c.mem.shard(k).served.Add(int64(n))
		return
	}
	c.st.bytesServed.Add(int64(n))
}

func (c *Cache) served() int64 {
	n := c.st.bytesServed.Load()
	if c.mem != nil {
		n += c.mem.served()
	}
	return n
}

// memFill fills the nil entries of out from memory without taking c.mu:
// the hit path. It reports whether every block was found.
func (c *Cache) memFill(b *blob, first int64, out [][]byte, peek bool) (bool, error) {
	all := true
	for j := range out {
		if out[j] != nil {
			continue
		}
		i := first + int64(j)
		d, ok := c.memGet(blockKey{b.id, i}, peek)
		if !ok {
			all = false
			continue
		}
		if want := c.blockLen(b, i); int64(len(d)) != want {
			return false, fmt.Errorf("layercache: %s block %d: cached %d bytes, blob size %d wants %d", b.key, i, len(d), b.size, want)
		}
		out[j] = d
	}
	return all, nil
}

// flight is one fetch of a run of contiguous blocks [first, first+n) of one
// blob: disk first, then one ranged Source read per sub-run still missing.
// Each block is published the moment it has arrived whole, so a reader
// waits for its own block, not for the whole run (a streamed run of 8 MiB
// would otherwise hold back its first block until the last byte came).
// Its blocks are registered in Cache.inflight from creation until the disk
// writes are done, so every reader of those blocks finds it.
type flight struct {
	b         *blob
	first     int64
	n         int
	keep      bool            // insert into the memory LRU; guarded by Cache.mu
	parent    context.Context // Cache.ctx, or a Reader's readahead context
	sem       chan struct{}   // the starting Reader's fetch slots; nil for none
	holdsSlot bool            // a slot was taken when the flight was made
	owner     *Reader         // gets the blocks when !keep
	readahead bool

	// Guarded by Cache.mu.
	blocks    [][]byte      // block j once it arrived whole, else nil
	progress  chan struct{} // closed and replaced when a block arrives or the flight ends
	finished  bool          // the flight ended; err says how
	err       error
	abandoned bool // failed because its parent was cancelled: waiters retry
	// bufs[j] is block j's recycled buffer (streams of readers that keep
	// blocks in memory); a reader taking blocks[j] takes a reference.
	bufs []*buf

	// A stream (stream.go) claims its blocks one by one as it goes.
	stream *streamState
}

// newFlightLocked registers a flight for blocks [a, b] and accounts its
// goroutine; the caller starts it with go c.runFlight(f) after unlocking.
func (c *Cache) newFlightLocked(bl *blob, a, b int64, g *getOpts, parent context.Context, readahead bool) *flight {
	f := &flight{
		b:         bl,
		first:     a,
		n:         int(b - a + 1),
		keep:      g.keep,
		parent:    parent,
		sem:       g.sem,
		owner:     g.owner,
		readahead: readahead,
		blocks:    make([][]byte, b-a+1),
		progress:  make(chan struct{}),
	}
	for i := a; i <= b; i++ {
		c.inflight[blockKey{bl.id, i}] = f
	}
	c.wg.Add(1)
	return f
}

// publishLocked makes block j of f, arrived whole, visible to waiters and
// to the memory LRU (or to the SkipMemory reader that owns the flight). A
// recycled buffer stays with the flight: see bufpool.go.
func (c *Cache) publishLocked(f *flight, j int, d []byte) {
	f.blocks[j] = d
	i := f.first + int64(j)
	if f.bufs != nil && f.bufs[j] != nil {
		// Readers take it from the flight, with a reference.
	} else if f.keep {
		c.memAdd(blockKey{f.b.id, i}, d)
	} else if f.owner != nil {
		// Under c.mu: a flight stashes a block with its owner before it
		// leaves c.inflight, so a block is always found in one of the two.
		f.owner.stashOne(i, d)
	}
	close(f.progress)
	f.progress = make(chan struct{})
}

func (c *Cache) publish(f *flight, j int, d []byte) {
	c.mu.Lock()
	c.publishLocked(f, j, d)
	c.mu.Unlock()
}

// getOpts says how one caller obtains blocks.
type getOpts struct {
	keep  bool          // fetched blocks go into the memory LRU
	peek  bool          // memory lookups do not refresh recency
	sem   chan struct{} // fetch slots of the calling Reader
	owner *Reader       // receives blocks of flights it starts when !keep
	// After the first pass has started the caller's own fetches, readahead
	// of blocks [raFrom, raTo] in runs of raPiece blocks by ra, so the
	// caller's fetches get slots first.
	ra           *Reader
	raFrom, raTo int64
	raPiece      int64
	// refs collects the recycled buffers the caller took: it releases them
	// once done with the blocks, whatever getBlocks returned.
	refs []*buf
	// off, end is the byte range the caller reads: what it takes of a
	// stream's block counts towards dropping the block.
	off, end int64
	// speculate: the read starts a run at block 0; a stream may serve it.
	speculate bool
}

// takeLocked returns block j of f for g: with a reference if it is a
// recycled buffer, and, from a stream, counting the bytes g will read.
func (c *Cache) takeLocked(f *flight, j int, g *getOpts) []byte {
	d := f.blocks[j]
	if d == nil {
		return nil
	}
	if f.bufs != nil && f.bufs[j] != nil {
		f.bufs[j].ref()
		g.refs = append(g.refs, f.bufs[j])
	}
	if f.stream != nil {
		start := (f.first + int64(j)) * c.bs
		lo, hi := max(g.off, start), min(g.end, start+int64(len(d)))
		if hi > lo {
			c.consumeLocked(f, j, lo, hi)
		}
	}
	return d
}

type waitRef struct {
	f *flight
	i int64
}

// getBlocks fills out[j] with block first+j of b for every nil out[j]: from
// memory, by joining a flight in progress, or by starting flights for the
// missing runs. It returns ctx.Err() as soon as ctx is done, while the
// flights go on for everyone else.
func (c *Cache) getBlocks(ctx context.Context, b *blob, first int64, out [][]byte, g *getOpts) error {
	all, err := c.memFill(b, first, out, g.peek)
	if err != nil {
		return err
	}
	if all {
		if g.ra != nil {
			g.ra.readahead(g.raFrom, g.raTo, g.raPiece)
		}
		return nil
	}
	last := first + int64(len(out)) - 1
	maxRun := int64(c.opts.MaxFetchBlocks)
	var waitBuf [4]waitRef
	waits := waitBuf[:0]
	var toStart []*flight
	startedRA := false
	var mismatch error
	for {
		waits, toStart = waits[:0], toStart[:0]
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		runStart := int64(-1)
		closeRun := func(end int64) {
			if runStart >= 0 {
				f := c.newFlightLocked(b, runStart, end, g, c.ctx, false)
				if f.sem != nil {
					select {
					case f.sem <- struct{}{}:
						f.holdsSlot = true
					default:
					}
				}
				toStart = append(toStart, f)
				for i := runStart; i <= end; i++ {
					waits = append(waits, waitRef{f, i})
				}
				runStart = -1
			}
		}
		for i := first; i <= last; i++ {
			if out[i-first] != nil {
				closeRun(i - 1)
				continue
			}
			k := blockKey{b.id, i}
			d, ok := c.memGet(k, g.peek)
			if !ok && g.owner != nil {
				d = g.owner.privateGet(i)
				ok = d != nil
			}
			f := c.inflight[k]
			if !ok && f != nil {
				// Arrived already, but kept out of memory (a SkipMemory
				// reader's flight) or evicted at once by a small bound.
				d = c.takeLocked(f, int(i-f.first), g)
				ok = d != nil
			}
			if ok {
				if int64(len(d)) != c.blockLen(b, i) {
					// Two Sources disagree on the size of one key. Fail,
					// after starting the flights already registered.
					mismatch = fmt.Errorf("layercache: %s block %d: cached %d bytes, blob size %d wants %d", b.key, i, len(d), b.size, c.blockLen(b, i))
				}
				out[i-first] = d
				closeRun(i - 1)
				continue
			}
			c.st.memMisses.Add(1)
			if f != nil {
				if g.keep {
					f.keep = true
				}
				c.st.sharedWaits.Add(1)
				c.awaitLocked(f, i)
				waits = append(waits, waitRef{f, i})
				closeRun(i - 1)
				continue
			}
			if runStart < 0 {
				runStart = i
			}
			if i-runStart+1 == maxRun {
				closeRun(i)
			}
		}
		closeRun(last)
		c.mu.Unlock()
		for _, f := range toStart {
			go c.runFlight(f)
		}
		if !startedRA && g.ra != nil {
			startedRA = true
			g.ra.readahead(g.raFrom, g.raTo, g.raPiece)
		}
		if mismatch != nil {
			return mismatch
		}
		if len(waits) == 0 {
			return nil
		}
		retry, err := c.wait(ctx, waits, first, out, g)
		if err != nil || !retry {
			return err
		}
	}
}

// wait fills out from the flights in waits as their blocks arrive. It
// reports retry when a flight was abandoned by its reader before bringing
// a block: the caller fetches that block again for itself.
func (c *Cache) wait(ctx context.Context, waits []waitRef, first int64, out [][]byte, g *getOpts) (retry bool, err error) {
	left := waits // not yet settled: a stream keeps their blocks for them
	defer func() {
		if len(left) > 0 {
			c.mu.Lock()
			for _, w := range left {
				c.unwaitLocked(w)
			}
			c.mu.Unlock()
		}
	}()
	for _, w := range waits {
		for {
			c.mu.Lock()
			f := w.f
			d := c.takeLocked(f, int(w.i-f.first), g)
			finished, ferr, abandoned, progress := f.finished, f.err, f.abandoned, f.progress
			dropped := f.stream != nil && f.stream.dropped[w.i-f.first]
			settled := d != nil || dropped || finished
			if settled {
				c.unwaitLocked(w)
				left = left[1:]
			}
			c.mu.Unlock()
			if d != nil {
				out[w.i-first] = d
				break
			}
			if dropped {
				// A stream dropped it (the reader moved far on, or it
				// was closed) before we woke: look again.
				retry = true
				break
			}
			if finished {
				if abandoned {
					retry = true // its reader went away; fetch again for ourselves
					break
				}
				if ferr == nil {
					// A flight that ends well published every block it
					// claimed; look again rather than trust that.
					retry = true
					break
				}
				return false, ferr
			}
			select {
			case <-progress:
			case <-ctx.Done():
				return false, ctx.Err()
			case <-c.ctx.Done():
				return false, ErrClosed
			}
		}
	}
	return retry, nil
}

// runFlight does the work of f and publishes the result.
func (c *Cache) runFlight(f *flight) {
	if f.stream != nil {
		c.runStream(f)
		return
	}
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(f.parent, c.opts.FetchTimeout)
	defer cancel()
	fromSource := make([]bool, f.n)
	err := c.fill(ctx, f, fromSource)

	c.mu.Lock()
	if err != nil {
		f.err = err
		f.abandoned = f.parent.Err() != nil
	}
	if f.keep {
		// A keeping reader may have joined after some blocks went to the
		// owner only.
		for j, d := range f.blocks {
			if d != nil {
				c.memAdd(blockKey{f.b.id, f.first + int64(j)}, d)
			}
		}
	}
	f.finished = true
	close(f.progress)
	if err != nil {
		c.forgetLocked(f) // what did not arrive is fetched again by the next reader
	}
	c.mu.Unlock()
	if c.disk != nil {
		// Only blocks that arrived whole were published; they are good
		// even if a later block of the run failed.
		for j, src := range fromSource {
			if src && f.blocks[j] != nil {
				c.disk.writeBlock(f.b.key, c.bs, f.first+int64(j), f.blocks[j])
			}
		}
	}
	if err == nil {
		c.mu.Lock()
		c.forgetLocked(f)
		c.mu.Unlock()
	}
}

func (c *Cache) forgetLocked(f *flight) {
	for j := 0; j < f.n; j++ {
		k := blockKey{f.b.id, f.first + int64(j)}
		if c.inflight[k] == f {
			delete(c.inflight, k)
		}
	}
}

// fill reads f's blocks from disk where whole, and fetches the rest with one
// ranged read per contiguous sub-run, publishing each block as it arrives.
func (c *Cache) fill(ctx context.Context, f *flight, fromSource []bool) error {
	if f.holdsSlot {
		defer func() { <-f.sem }()
	}
	missing := make([]bool, f.n)
	for j := range missing {
		missing[j] = true
	}
	if c.disk != nil {
		for j := range missing {
			i := f.first + int64(j)
			if d := c.disk.readBlock(f.b.key, c.bs, i, c.blockLen(f.b, i)); d != nil {
				missing[j] = false
				c.publish(f, j, d)
			}
		}
	}
	acquired := f.holdsSlot
	for j := 0; j < f.n; {
		if !missing[j] {
			j++
			continue
		}
		end := j
		for end+1 < f.n && missing[end+1] {
			end++
		}
		if !acquired && f.sem != nil {
			select {
			case f.sem <- struct{}{}:
				acquired = true
				defer func() { <-f.sem }()
			case <-ctx.Done():
				return fmt.Errorf("layercache: fetch %s blocks %d-%d: %w", f.b.key, f.first+int64(j), f.first+int64(end), ctx.Err())
			}
		}
		for k := j; k <= end; k++ {
			fromSource[k] = true
		}
		if err := c.fetch(ctx, f, j, end); err != nil {
			return err
		}
		j = end + 1
	}
	return nil
}

// fetch reads blocks [j, end] of f (relative indexes) with one ranged read.
func (c *Cache) fetch(ctx context.Context, f *flight, j, end int) error {
	b := f.b
	a, z := f.first+int64(j), f.first+int64(end)
	off := a * c.bs
	n := z*c.bs + c.blockLen(b, z) - off
	if b.stream && j < end {
		return c.fetchStream(ctx, f, j, end, off, n)
	}
	buf := make([]byte, n)
	c.st.sourceRequests.Add(1)
	if f.readahead {
		c.st.readaheadFetches.Add(1)
	}
	c.st.inFlight.Add(1)
	got, err := b.src.ReadAt(ctx, buf, off)
	c.st.inFlight.Add(-1)
	if got > 0 {
		c.st.bytesFetched.Add(int64(min(got, len(buf))))
	}
	if got == len(buf) && errors.Is(err, io.EOF) {
		err = nil // io.ReaderAt may report EOF with a full read of the tail
	}
	if got != len(buf) && (err == nil || errors.Is(err, io.EOF)) {
		// Never let a short read look like the end of the blob to callers.
		err = fmt.Errorf("got %d of %d bytes: %w: %w", got, len(buf), ErrShortRead, io.ErrUnexpectedEOF)
	}
	if err != nil {
		c.st.sourceErrors.Add(1)
		return fmt.Errorf("layercache: fetch %s bytes %d-%d (blocks %d-%d): %w", b.key, off, off+n, a, z, err)
	}
	if j == end {
		c.publish(f, j, buf)
		return nil
	}
	// One allocation per block, so the memory LRU frees blocks one by one
	// and its byte count is the memory it really holds.
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := j; k <= end; k++ {
		lo := int64(k-j) * c.bs
		blk := make([]byte, c.blockLen(b, f.first+int64(k)))
		copy(blk, buf[lo:])
		c.publishLocked(f, k, blk)
	}
	return nil
}

// fetchStream reads blocks [j, end] of f with one Open of their span,
// straight into per-block buffers, publishing each block as it arrives
// except the last, which waits for the end of the stream (a stream running
// long is a broken Source). A stream of the whole blob is published only
// after its end, where a verifying Source reports a digest mismatch.
func (c *Cache) fetchStream(ctx context.Context, f *flight, j, end int, off, n int64) error {
	b := f.b
	a, z := f.first+int64(j), f.first+int64(end)
	c.st.sourceRequests.Add(1)
	if f.readahead {
		c.st.readaheadFetches.Add(1)
	}
	c.st.inFlight.Add(1)
	defer c.st.inFlight.Add(-1)
	fail := func(err error) error {
		c.st.sourceErrors.Add(1)
		return fmt.Errorf("layercache: fetch %s bytes %d-%d (blocks %d-%d): %w", b.key, off, off+n, a, z, err)
	}
	rc, err := b.src.Open(ctx, off, n)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	whole := off == 0 && n == b.size
	var held [][]byte // blocks held until the end is checked
	var got int64
	for k := j; k <= end; k++ {
		blk := make([]byte, c.blockLen(b, f.first+int64(k)))
		m, err := io.ReadFull(rc, blk)
		got += int64(m)
		c.st.bytesFetched.Add(int64(m))
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(fmt.Errorf("got %d of %d bytes: %w: %w", got, n, ErrShortRead, io.ErrUnexpectedEOF))
		}
		if err != nil {
			return fail(err)
		}
		if whole || k == end {
			held = append(held, blk)
		} else {
			c.publish(f, k, blk)
		}
	}
	// Read to the end: a stream over a whole blob reports a digest mismatch
	// there (a registry blob does), and a longer stream is a broken Source.
	var one [1]byte
	switch m, err := io.ReadFull(rc, one[:]); {
	case m > 0:
		return fail(fmt.Errorf("stream longer than the %d bytes asked for", n))
	case err != io.EOF:
		return fail(err)
	}
	c.mu.Lock()
	for k, blk := range held {
		c.publishLocked(f, end-len(held)+1+k, blk)
	}
	c.mu.Unlock()
	return nil
}
