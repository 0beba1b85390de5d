package layercache

import (
	"github.com/regfs/regfs/blobio"

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
	// WholeBlocks makes ReadExact an ordinary ReadAt: everything it touches
	// is fetched and cached in whole blocks, as a prefetch for later use
	// wants.
	WholeBlocks bool
	// Ranged fetches with ranged reads only, never a stream (Source.Open):
	// exactly the block runs asked for, as a prefetch of some files wants.
	Ranged bool
}

// minSequentialRun is how many contiguous bytes (or one block, if smaller)
// a run of reads covers before it counts as sequential and reads ahead:
// two FUSE requests of a read(2) from the start of a file reach it.
const minSequentialRun = 128 << 10

// minSpeculativeRead is the smallest read of a blob's first block that
// starts a stream at once (see track), or a whole block if smaller.
const minSpeculativeRead = 64 << 10

// Reader reads one blob through the cache. It is a blobio.ReaderAt, safe
// for concurrent use. Close it when done: that stops its readahead.
type Reader struct {
	c      *Cache
	b      *blob
	skip   bool // SkipMemory, or the cache has no memory tier
	seq    bool
	whole  bool            // WholeBlocks
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
	// lastBlock is the last block of the latest read, what SkipMemory
	// pruning keeps; front the furthest last block of the current run,
	// where a stream's window starts.
	lastBlock atomic.Int64
	front     atomic.Int64
	lastFirst atomic.Int64           // first block of the latest read
	streamF   atomic.Pointer[flight] // this reader's running stream, if any

	privMu  sync.Mutex       // a leaf lock: nothing else is taken while it is held
	private map[int64][]byte // SkipMemory: the blocks this reader is on
}

var _ blobio.ReaderAt = (*Reader)(nil)

// Open returns a Reader over src with default OpenOptions. Readers of the
// same Key share cached blocks and fetches.
func (c *Cache) Open(src blobio.Source) *Reader { return c.OpenWith(src, OpenOptions{}) }

// OpenWith returns a Reader over src tuned by o.
func (c *Cache) OpenWith(src blobio.Source, o OpenOptions) *Reader {
	ctx, cancel := context.WithCancel(c.ctx)
	r := &Reader{
		c:      c,
		b:      c.newBlob(src, !o.Ranged),
		skip:   o.SkipMemory || c.mem == nil,
		seq:    o.Sequential,
		whole:  o.WholeBlocks,
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
	var small [4][]byte
	var refs [4]*buf
	vec, held, err := r.slices(ctx, small[:0], refs[:0], off, len(p))
	copied := 0
	for _, v := range vec {
		copied += copy(p[copied:], v)
	}
	releaseAll(held)
	return copied, err
}

// Slices is ReadAt without the copy: it returns the bytes [off, off+n) as
// slices of the cache's blocks, in order, with io.EOF (and the slices up to
// the end) when off+n passes the end. The slices are shared and must never
// be written to. They stay valid until release is called, which the caller
// must do exactly once when done with them (after an error too): some
// blocks are recycled buffers. A FUSE server hands them to writev(2) as they
// are and releases them once the reply is written.
func (r *Reader) Slices(ctx context.Context, off int64, n int) (vec [][]byte, release func(), err error) {
	vec, held, err := r.slices(ctx, nil, nil, off, n)
	if len(held) == 0 {
		return vec, func() {}, err
	}
	var once sync.Once
	return vec, func() { once.Do(func() { releaseAll(held) }) }, err
}

// slices appends to vec the slices of [off, off+n), and to held the
// recycled buffers they point into, which the caller releases.
func (r *Reader) slices(ctx context.Context, vec [][]byte, held []*buf, off int64, n int) ([][]byte, []*buf, error) {
	if r.closed.Load() {
		return nil, held, ErrClosed
	}
	size := r.b.size
	switch {
	case size < 0:
		return nil, held, fmt.Errorf("layercache: read %s: unknown blob size %d", r.b.key, size)
	case off < 0:
		return nil, held, fmt.Errorf("layercache: read %s at negative offset %d", r.b.key, off)
	case n < 0:
		return nil, held, fmt.Errorf("layercache: read %s: negative length %d", r.b.key, n)
	case off >= size:
		return nil, held, io.EOF
	case n == 0:
		return nil, held, nil
	}
	eof := false
	if int64(n) > size-off {
		n, eof = int(size-off), true
	}
	bs := r.c.bs
	end := off + int64(n)
	first, last := off/bs, (end-1)/bs
	nb := int(last - first + 1)
	var small [4][]byte
	var out [][]byte
	if nb <= len(small) {
		out = small[:nb]
	} else {
		out = make([][]byte, nb)
	}
	g := getOpts{keep: !r.skip, peek: r.skip, sem: r.sem, refs: held, off: off, end: end}
	if r.skip {
		g.owner = r
	}
	r.track(off, end, first, last, out, &g)
	r.lastBlock.Store(last)
	r.lastFirst.Store(first)
	if last > r.front.Load() {
		r.front.Store(last)
	}
	if f := r.streamF.Load(); f != nil {
		f.moved(r.c)
	} else if g.speculate {
		r.speculate()
	}
	if err := r.c.getBlocks(ctx, r.b, first, out, &g); err != nil {
		return nil, g.refs, err
	}
	if r.skip {
		r.stash(first, out, g.refs)
	}
	for j, d := range out {
		start := first + int64(j)
		lo := max(off-start*bs, 0)
		hi := min(end-start*bs, int64(len(d)))
		vec = append(vec, d[lo:hi:hi])
	}
	r.c.addServed(blockKey{r.b.id, first}, n)
	if eof {
		return vec, g.refs, io.EOF
	}
	return vec, g.refs, nil
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
	// The kernel's own readahead sends requests up to its window ahead of
	// the application, in parallel: allow for as much as ours.
	tol := max(2*bs, 4*(end-off), w*bs)
	switch {
	case prev >= 0 && off >= min(prev, r.runStart.Load())-tol && off <= prev+tol:
		// (Anywhere in the run so far counts: a request can be overtaken
		// by many later ones.)
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
		// The stream goes first: once front moves, a stream still
		// running would claim blocks up to the new window.
		if f := r.streamF.Swap(nil); f != nil {
			f.stream.cancel() // its blocks would be wasted now
		}
		r.runStart.Store(off)
		r.runEnd.Store(end)
		r.raNext.Store(0)
		r.front.Store(last)
		w = 0
		if r.seq {
			w = limit
		}
		// Most files are read from their start to the end: a large read
		// of the first block (the kernel's first READ of a file is 64 KiB
		// or more) opens a stream right away, so a sequential reader's
		// next blocks come on the same connection instead of after a
		// second round trip. If no read follows, the stream asks for
		// nothing beyond the read (it waits for the window), but the
		// server may have sent up to a socket buffer's worth (a few MiB
		// on loopback) before it ends: small reads at the start (format
		// probes, headers) do not speculate.
		g.speculate = first == 0 && end-off >= min(minSpeculativeRead, bs)
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
	streams := r.b.stream
	c := r.c
	g := getOpts{keep: !r.skip, sem: r.sem}
	if r.skip {
		g.owner = r
	}
	var toStart []*flight
	c.mu.Lock()
	if !c.closed {
		active := r.streamF.Load()
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
			if active != nil && i < active.first+int64(active.n) {
				// The running stream claims it as the reader moves on.
				launch(i - 1)
				break
			}
			if active == nil && c.disk != nil && c.disk.knowsBlock(r.b.key, c.bs, i) {
				// On disk: read ahead from there in recycled buffers
				// (disk_stream.go) rather than a flight per piece.
				launch(i - 1)
				if !full {
					if f := r.startDiskStreamLocked(i, &g); f != nil {
						toStart = append(toStart, f)
						next = i + 1
					}
				}
				break
			}
			if streams && active == nil && i > 0 && (c.disk == nil || !c.disk.hasBlock(r.b.key, c.bs, i)) {
				// Missing everywhere: one stream from here on rather
				// than a request per piece.
				launch(i - 1)
				if !full {
					if f := r.startStreamLocked(i, &g); f != nil {
						toStart = append(toStart, f)
						next = i + 1
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

// speculate starts a stream at block 0 for a read of it, if the blob is a
// stream (not Ranged) and block 0 is missing everywhere.
func (r *Reader) speculate() {
	if !r.b.stream || r.c.opts.Readahead <= 0 || r.b.nblocks < 2 {
		return
	}
	c := r.c
	g := getOpts{keep: !r.skip, sem: r.sem}
	if r.skip {
		g.owner = r
	}
	var f *flight
	c.mu.Lock()
	k := blockKey{r.b.id, 0}
	if !c.closed && r.streamF.Load() == nil && !r.privateHas(0) && !c.memContains(k) && c.inflight[k] == nil &&
		(c.disk == nil || !c.disk.hasBlock(r.b.key, c.bs, 0)) {
		f = r.startStreamLocked(0, &g)
	}
	c.mu.Unlock()
	if f != nil {
		go c.runFlight(f)
	}
}

// stash keeps blocks privately for a SkipMemory reader.
// Recycled buffers (taken from another reader's stream, held in refs) are
// not kept: they go back to their pool once this read is done.
func (r *Reader) stash(first int64, blocks [][]byte, refs []*buf) {
	r.privMu.Lock()
	defer r.privMu.Unlock()
	if r.private == nil {
		return
	}
	for j, d := range blocks {
		if d != nil && !recycled(d, refs) {
			r.private[first+int64(j)] = d
		}
	}
	r.boundPrivateLocked()
}

// recycled reports whether block d is one of the buffers in refs.
func recycled(d []byte, refs []*buf) bool {
	for _, b := range refs {
		if len(d) > 0 && len(b.full) > 0 && &b.full[0] == &d[0] {
			return true
		}
	}
	return false
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
