package layercache

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// OpenOptions tunes one Reader for its access pattern.
type OpenOptions struct {
	// Sequential declares a one-pass sequential consumer (a streaming index
	// build, a prefetch): readahead runs at the full Options.Readahead window
	// from the first read instead of growing into it.
	Sequential bool
	// SkipMemory keeps the blocks this Reader fetches out of the shared
	// memory LRU, so one pass over a large blob does not push out what other
	// readers use. The Reader keeps the blocks it is reading and those read
	// ahead for it privately (at most about Readahead+MaxFetchBlocks blocks)
	// and drops them once it has moved past; they still go to the disk tier.
	// Blocks already in memory are served without refreshing their recency.
	// Read whole blocks, in order: a block re-read after the Reader moved on
	// is fetched again (or read from disk).
	SkipMemory bool
}

// minSequentialRun is how many contiguous bytes (or one block, if smaller)
// a run of reads covers before it counts as sequential and reads ahead:
// two FUSE requests of a read(2) from the start of a file reach it.
const minSequentialRun = 128 << 10

// Reader reads one blob through the cache. It satisfies ReaderAt and is safe
// for concurrent use. Close it when done: that stops its readahead.
type Reader struct {
	c      *Cache
	b      *blob
	skip   bool // SkipMemory, or the cache has no memory tier
	seq    bool
	ctx    context.Context // parent of this Reader's readahead fetches
	cancel context.CancelFunc
	sem    chan struct{} // fetch slots: Options.MaxParallel
	closed atomic.Bool

	// The sequential-read detector is lock-free: concurrent readers of one
	// Reader may race on it, which only blurs the heuristic.
	runStart atomic.Int64 // start offset of the current sequential run
	runEnd   atomic.Int64 // end offset of the current sequential run, -1 at start
	window   atomic.Int64 // current readahead window in blocks
	raNext   atomic.Int64 // first block of the run not yet read ahead (or found present)
	// lastBlock is the last block of the latest read: where a stream's
	// window starts, and what SkipMemory pruning keeps.
	lastBlock atomic.Int64
	streamF   atomic.Pointer[flight] // this reader's running stream, if any

	privMu  sync.Mutex       // a leaf lock: nothing else is taken while it is held
	private map[int64][]byte // SkipMemory: the blocks this reader is on
}

var _ ReaderAt = (*Reader)(nil)

// Open returns a Reader over src with default OpenOptions. Readers of the
// same Key share cached blocks and fetches.
func (c *Cache) Open(src Source) *Reader { return c.OpenWith(src, OpenOptions{}) }

// OpenWith returns a Reader over src tuned by o.
func (c *Cache) OpenWith(src Source, o OpenOptions) *Reader {
	ctx, cancel := context.WithCancel(c.ctx)
	r := &Reader{
		c:      c,
		b:      c.newBlob(src),
		skip:   o.SkipMemory || c.mem == nil,
		seq:    o.Sequential,
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, c.opts.MaxParallel),
	}
	r.runEnd.Store(-1)
	r.lastBlock.Store(-1)
	if r.skip {
		r.private = make(map[int64][]byte)
	}
	return r
}

// Size is the blob's size.
func (r *Reader) Size() int64 { return r.b.size }

// Key is the blob's key.
func (r *Reader) Key() string { return r.b.key }

// Close cancels this Reader's readahead; later reads return ErrClosed.
// Fetches other readers wait on are not affected (they retry). Idempotent.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.cancel()
	r.privMu.Lock()
	r.private = nil
	r.privMu.Unlock()
	return nil
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt does: a full read or an
// error; io.EOF (with the bytes up to the end) when off+len(p) passes the
// end. If ctx is done while waiting for a fetch, ReadAt returns ctx.Err() at
// once and the fetch carries on for the other readers and the cache.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	size := r.b.size
	switch {
	case size < 0:
		return 0, fmt.Errorf("layercache: read %s: unknown blob size %d", r.b.key, size)
	case off < 0:
		return 0, fmt.Errorf("layercache: read %s at negative offset %d", r.b.key, off)
	case off >= size:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	eof := false
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], true
	}
	bs := r.c.bs
	first, last := off/bs, (off+int64(len(p))-1)/bs
	n := int(last - first + 1)
	var small [4][]byte
	var out [][]byte
	if n <= len(small) {
		out = small[:n]
	} else {
		out = make([][]byte, n)
	}
	g := getOpts{keep: !r.skip, peek: r.skip, sem: r.sem}
	if r.skip {
		g.owner = r
	}
	r.track(off, off+int64(len(p)), first, last, out, &g)
	r.lastBlock.Store(last)
	if f := r.streamF.Load(); f != nil {
		f.stream.wake()
	}
	if err := r.c.getBlocks(ctx, r.b, first, out, &g); err != nil {
		return 0, err
	}
	if r.skip {
		r.stash(first, out)
	}
	copied := 0
	for j, d := range out {
		from := max(off-(first+int64(j))*bs, 0)
		copied += copy(p[copied:], d[from:])
	}
	r.c.addServed(blockKey{r.b.id, first}, copied)
	if eof {
		return copied, io.EOF
	}
	return copied, nil
}

// track updates the sequential-read detector with a read of [off, end)
// (blocks [first, last]), fills out from the private blocks of a SkipMemory
// reader, and sets g's readahead span when the read continues a sequential
// run.
//
// A read is sequential when it starts near where the run so far ends:
// within a tolerance, because the kernel sends a sequential read(2) through
// FUSE as several concurrent requests that may arrive out of order. The
// window starts at 4 blocks on the first continuation and doubles with
// every read that extends the run, up to Options.Readahead; a jump resets
// it to 0, so random reads fetch only their own blocks. Readahead is
// topped up on every read, not only when the reader crosses into a new
// block: the next piece is launched as soon as a whole piece fits in the
// window ahead of the reader.
func (r *Reader) track(off, end, first, last int64, out [][]byte, g *getOpts) {
	if r.skip {
		r.privMu.Lock()
		for j := range out {
			out[j] = r.private[first+int64(j)]
		}
		r.privMu.Unlock()
	}
	limit := int64(r.c.opts.Readahead)
	if limit <= 0 {
		return
	}
	bs := r.c.bs
	prev := r.runEnd.Load()
	w := r.window.Load()
	tol := max(2*bs, 4*(end-off))
	switch {
	case prev >= 0 && off >= prev-tol && off <= prev+tol:
		// Behind the run's end: a request overtaken by a later one, or a
		// re-read; the window stays. Beyond it: the run goes on, and grows
		// the window once it is long enough to tell from a few nearby
		// small reads.
		if end > prev {
			r.runEnd.Store(end)
			switch {
			case r.seq:
				w = limit
			case end-r.runStart.Load() < min(bs, minSequentialRun):
			case w == 0:
				w = min(4, limit)
			default:
				w = min(2*w, limit)
			}
		}
	default:
		// The first read, or a jump: random access does not read ahead
		// (unless the reader declared itself sequential).
		r.runStart.Store(off)
		r.runEnd.Store(end)
		r.raNext.Store(0)
		if f := r.streamF.Swap(nil); f != nil {
			f.stream.cancel() // its blocks would be wasted now
		}
		w = 0
		if r.seq {
			w = limit
		}
	}
	r.window.Store(w)
	if r.skip {
		r.privMu.Lock()
		r.prunePrivateLocked(first)
		r.privMu.Unlock()
	}
	if w == 0 {
		return
	}
	from := max(r.raNext.Load(), last+1)
	to := min(last+w, r.b.nblocks-1)
	piece := max(1, min(w/2, int64(r.c.opts.MaxFetchBlocks)))
	if from > to || (to-from+1 < piece && to < r.b.nblocks-1) {
		// Nothing left to read ahead, or wait until a whole piece fits:
		// fewer, larger requests.
		return
	}
	g.ra, g.raFrom, g.raTo, g.raPiece = r, from, to, piece
}

// readahead starts fetches for the missing blocks of [from, to], in pieces
// of at most piece blocks, only while this Reader has free fetch slots:
// readahead never makes a reader's own misses wait for a slot long. It
// advances the reader's readahead frontier past what it launched or found
// present; what it could not launch is tried again at the next read.
func (r *Reader) readahead(from, to, piece int64) {
	if from > to || r.closed.Load() {
		return
	}
	_, streams := r.b.src.(StreamSource)
	if streams && r.streamF.Load() != nil {
		return // the running stream goes on as the reader moves on
	}
	c := r.c
	g := getOpts{keep: !r.skip, sem: r.sem}
	if r.skip {
		g.owner = r
	}
	var toStart []*flight
	c.mu.Lock()
	if !c.closed {
		runStart := int64(-1)
		full := false
		next := from // first block neither launched nor found present
		launch := func(end int64) {
			if runStart < 0 || full {
				return
			}
			select {
			case r.sem <- struct{}{}:
				f := c.newFlightLocked(r.b, runStart, end, &g, r.ctx, true)
				f.holdsSlot = true
				toStart = append(toStart, f)
				next = end + 1
			default:
				full = true
			}
			runStart = -1
		}
		for i := from; i <= to && !full; i++ {
			k := blockKey{r.b.id, i}
			if r.privateHas(i) || c.memContains(k) || c.inflight[k] != nil {
				launch(i - 1)
				if !full {
					next = i + 1
				}
				continue
			}
			if streams && i > 0 && (c.disk == nil || !c.disk.hasBlock(r.b.key, c.bs, i)) {
				// Missing everywhere: one stream from here on rather
				// than a request per piece. (Never from block 0: a
				// stream of the whole blob is checked only at its end.)
				launch(i - 1)
				if !full {
					if f := r.startStreamLocked(i, &g); f != nil {
						toStart = append(toStart, f)
						next = to + 1
					}
				}
				break
			}
			if runStart < 0 {
				runStart = i
			}
			if i-runStart+1 == piece {
				launch(i)
			}
		}
		launch(to)
		if next > r.raNext.Load() {
			r.raNext.Store(next)
		}
	}
	c.mu.Unlock()
	for _, f := range toStart {
		go c.runFlight(f)
	}
}

// stash keeps blocks privately for a SkipMemory reader.
func (r *Reader) stash(first int64, blocks [][]byte) {
	r.privMu.Lock()
	defer r.privMu.Unlock()
	if r.private == nil {
		return
	}
	for j, d := range blocks {
		if d != nil {
			r.private[first+int64(j)] = d
		}
	}
	r.boundPrivateLocked()
}

// stashOne keeps block i privately for a SkipMemory reader.
func (r *Reader) stashOne(i int64, d []byte) {
	r.privMu.Lock()
	defer r.privMu.Unlock()
	if r.private == nil {
		return
	}
	r.private[i] = d
	r.boundPrivateLocked()
}

// boundPrivateLocked keeps at most the readahead window and one fetch run
// (plus the blocks being read) of private blocks.
func (r *Reader) boundPrivateLocked() {
	limit := max(r.c.opts.Readahead, 0) + r.c.opts.MaxFetchBlocks + 2
	for len(r.private) > limit {
		// Drop the block furthest from where the reader is.
		var far int64 = -1
		var farDist int64 = -1
		at := r.lastBlock.Load()
		for i := range r.private {
			d := i - at
			if d < 0 {
				d = -d * 4 // behind the reader: least likely to be read again
			}
			if d > farDist {
				far, farDist = i, d
			}
		}
		delete(r.private, far)
	}
}

// privateGet returns a block this SkipMemory reader keeps, or nil.
func (r *Reader) privateGet(i int64) []byte {
	if !r.skip {
		return nil
	}
	r.privMu.Lock()
	d := r.private[i]
	r.privMu.Unlock()
	return d
}

func (r *Reader) privateHas(i int64) bool { return r.privateGet(i) != nil }

// prunePrivateLocked drops private blocks the reader has moved past.
func (r *Reader) prunePrivateLocked(first int64) {
	for i := range r.private {
		if i < first-1 {
			delete(r.private, i)
		}
	}
}
