package layercache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// A stream is how a sequential reader of a streaming Source reads ahead: one
// ranged request from the first missing block towards the end of the blob,
// read block by block and published as each block arrives, kept at most the
// reader's readahead window ahead of it. Against a registry every request
// costs a round trip before its first byte (and a server-side setup; for the
// reference registry, several milliseconds), so a sequential pass made of
// many ranged requests runs well below the speed of one plain GET; a stream
// pays that once.
//
// A stream claims blocks (registers them in Cache.inflight) as far as the
// reader's window reaches, ahead of reading them, so the kernel's
// concurrent readahead requests for those blocks wait on the stream instead
// of starting requests of their own; it claims more as the reader moves on.
// It stops, successfully, before the first block already present (memory,
// disk, another fetch), when the reader jumps elsewhere or closes (its
// context; claimed blocks not yet read are then fetched again by whoever
// waits for them), after streamIdle without the reader moving on, or at the
// end of its span; the reader's readahead starts the next one where needed.
//
// Like every ranged read, a stream's blocks are served as they arrive. A
// stream of the whole blob (from block 0) is also checked against the
// blob's digest by a verifying Source (a registry blob) at its end: its last
// block is published only after that, so a reader of the whole blob gets an
// error instead of a wrong end.
//
// A stream's blocks do not enter the memory LRU. The stream keeps each one
// (findable in Cache.inflight) until readers have taken all of its bytes,
// or until the reader moved two windows past it, closed, or went idle; then it
// drops it, and a recycled buffer (bufpool.go) goes back to the pool once
// the last reader holding it is done. After its last block the stream
// lingers until its blocks are consumed that way.
// So a stream holds about a window of blocks however long it runs, and a
// sequential pass touches no new memory once the pool is warm.

const (
	// maxStreamBlocks bounds the span of one stream request.
	maxStreamBlocks = 1024
	// streamIdle ends a stream whose reader stopped moving on, so it does
	// not hold a connection and buffers for nothing.
	streamIdle = 10 * time.Second
)

// streamState is the part of a flight only streams have. Guarded by
// Cache.mu except the fields set at creation.
type streamState struct {
	reader *Reader       // whose window throttles the stream
	kick   chan struct{} // the reader moved on or took bytes (capacity 1)
	cancel context.CancelFunc

	claimed   int     // blocks [0, claimed) are registered
	ended     bool    // a present block (or the cache's end) ends the stream at claimed
	published int     // blocks [0, published) arrived
	consumed  []int64 // bytes of block j readers took
	waiters   []int32 // readers waiting for block j: it is not dropped under them
	dropped   []bool  // block j was dropped (released)
	live      int     // published blocks not dropped yet

	fromDisk bool // reads the disk tier, not the Source (disk_stream.go)
}

// awaitLocked notes that a reader waits for block i of f (a stream's
// blocks are kept for their waiters); wait settles it with unwaitLocked.
func (c *Cache) awaitLocked(f *flight, i int64) {
	if f.stream != nil {
		f.stream.waiters[i-f.first]++
	}
}

// unwaitLocked settles a wait noted by awaitLocked: a block taken whole
// and no longer waited for is dropped.
func (c *Cache) unwaitLocked(w waitRef) {
	st := w.f.stream
	if st == nil {
		return
	}
	j := int(w.i - w.f.first)
	st.waiters[j]--
	if st.waiters[j] == 0 && !st.dropped[j] && j < st.published && st.consumed[j] >= int64(len(w.f.blocks[j])) && w.i != w.f.b.nblocks-1 {
		c.dropLocked(w.f, j)
	}
}

// startStreamLocked registers a stream of blob blocks from i on for r and
// returns it; the caller starts it with go c.runFlight(f) after unlocking.
// A reader has at most one stream, beside the MaxParallel fetches its
// slots bound: a stream must not wait behind the small fetches it replaces.
func (r *Reader) startStreamLocked(i int64, g *getOpts) *flight {
	c := r.c
	// The span ends before the first block known to be present already:
	// the request then asks for no byte the stream would have to skip.
	n := 1
	for last := min(r.b.nblocks, i+maxStreamBlocks); i+int64(n) < last && !c.knownLocked(r, i+int64(n)); n++ {
	}
	return r.registerStreamLocked(i, n, g, false)
}

// registerStreamLocked makes the stream of blocks [i, i+n) for r, from the
// Source or (fromDisk) the disk tier, registers its first block and those
// the window reaches, and makes it r's stream. The first block is missing
// (the caller checked).
func (r *Reader) registerStreamLocked(i int64, n int, g *getOpts, fromDisk bool) *flight {
	c := r.c
	ctx, cancel := context.WithCancel(r.ctx)
	f := &flight{
		b:         r.b,
		first:     i,
		n:         n,
		keep:      g.keep,
		parent:    ctx,
		owner:     g.owner,
		readahead: true,
		blocks:    make([][]byte, n),
		progress:  make(chan struct{}),
		stream: &streamState{
			reader:   r,
			kick:     make(chan struct{}, 1),
			cancel:   cancel,
			consumed: make([]int64, n),
			waiters:  make([]int32, n),
			dropped:  make([]bool, n),
			fromDisk: fromDisk,
		},
	}
	if g.keep {
		// A SkipMemory owner keeps blocks in its private map, out of the
		// buffers' reference counts: those get plain memory.
		f.bufs = make([]*buf, n)
	}
	c.inflight[blockKey{r.b.id, i}] = f
	f.stream.claimed = 1
	c.extendLocked(f)
	c.wg.Add(1)
	r.streamF.Store(f)
	return f
}

// extendLocked claims the blocks of stream f that its reader's window now
// reaches, up to the first block present already, which ends the stream.
func (c *Cache) extendLocked(f *flight) {
	st := f.stream
	if c.closed || f.parent.Err() != nil || f.finished {
		// Closed, or cancelled by a jump: the reader's window is
		// somewhere else now. Finished: the reader may still call moved
		// before it forgets the stream, and a block claimed then would
		// wait on a flight that never brings it (or report its error).
		st.ended = true
	}
	r := st.reader
	limit := r.front.Load() + r.window.Load()
	for !st.ended && st.claimed < f.n {
		i := f.first + int64(st.claimed)
		if i > limit {
			return
		}
		if st.fromDisk && c.heldLocked(r, i) || !st.fromDisk && c.presentLocked(r, i) {
			st.ended = true
			return
		}
		c.inflight[blockKey{f.b.id, i}] = f
		st.claimed++
	}
}

// presentLocked reports whether block i of r's blob is in memory, with r,
// being fetched, or on disk (asking the file system: another Cache may have
// written it).
func (c *Cache) presentLocked(r *Reader, i int64) bool {
	k := blockKey{r.b.id, i}
	return c.inflight[k] != nil || c.memContains(k) || r.privateHas(i) ||
		(c.disk != nil && c.disk.hasBlock(r.b.key, c.bs, i))
}

// knownLocked is presentLocked with the disk tier's index only: no system
// call per block.
func (c *Cache) knownLocked(r *Reader, i int64) bool {
	k := blockKey{r.b.id, i}
	return c.inflight[k] != nil || c.memContains(k) || r.privateHas(i) ||
		(c.disk != nil && c.disk.knowsBlock(r.b.key, c.bs, i))
}

// moved is called by the stream's reader after each read: it claims what
// the window now reaches (before the reader's own lookups, so blocks the
// stream will bring are waited for rather than fetched twice), drops blocks
// the reader left a window behind, and wakes the stream.
func (f *flight) moved(c *Cache) {
	c.mu.Lock()
	c.extendLocked(f)
	c.dropBehindLocked(f)
	c.mu.Unlock()
	f.stream.wake()
}

// wake tells a waiting stream that its reader moved on or took bytes.
func (s *streamState) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// consumeLocked accounts that a reader took bytes [lo, hi) of block j of
// stream f; a block taken whole is dropped at once.
func (c *Cache) consumeLocked(f *flight, j int, lo, hi int64) {
	st := f.stream
	st.consumed[j] += hi - lo
	if st.consumed[j] >= int64(len(f.blocks[j])) && st.waiters[j] == 0 && f.first+int64(j) != f.b.nblocks-1 {
		// (The blob's last block stays a while: readers of a file's
		// end often read it twice.)
		c.dropLocked(f, j)
		st.wake()
	}
}

// dropBehindLocked drops the published blocks of f that the reader has
// moved two windows past (taken only in part, or not at all): re-reads of
// them are not worth the memory. Requests still pending from before are
// within a window behind the latest read; the second is slack for requests
// whose goroutine was slow to start.
func (c *Cache) dropBehindLocked(f *flight) {
	st := f.stream
	r := st.reader
	behind := r.lastFirst.Load() - 2*max(r.window.Load(), 4) - f.first
	for j := 0; j < st.published && int64(j) < behind; j++ {
		if st.waiters[j] == 0 {
			c.dropLocked(f, j)
		}
	}
}

// dropLocked drops published block j of stream f: no reader finds it any
// more, and its buffer goes back to the pool once the readers holding it
// are done.
func (c *Cache) dropLocked(f *flight, j int) {
	st := f.stream
	if st.dropped[j] || j >= st.published {
		return
	}
	st.dropped[j] = true
	st.live--
	k := blockKey{f.b.id, f.first + int64(j)}
	if c.inflight[k] == f {
		delete(c.inflight, k)
	}
	f.blocks[j] = nil
	if f.bufs != nil && f.bufs[j] != nil {
		f.bufs[j].release()
		f.bufs[j] = nil
	}
}

// runStream runs the stream f: its blocks, then lingering until they are
// consumed.
func (c *Cache) runStream(f *flight) {
	defer c.wg.Done()
	st := f.stream
	r := st.reader
	defer st.cancel()
	stop, err := c.streamBlocks(f)
	if r.raNext.Load() > stop {
		r.raNext.Store(stop) // read ahead again from where the stream stopped
	}
	c.mu.Lock()
	if err != nil {
		f.err = err
		f.abandoned = f.parent.Err() != nil
	}
	f.finished = true
	close(f.progress)
	// Claimed blocks that never arrived: whoever wants them fetches them.
	for j := st.published; j < st.claimed; j++ {
		if k := (blockKey{f.b.id, f.first + int64(j)}); c.inflight[k] == f {
			delete(c.inflight, k)
		}
	}
	c.mu.Unlock()
	r.streamF.CompareAndSwap(f, nil)

	// Linger until the published blocks are taken, the reader moves past
	// them or goes away.
	idle := time.NewTimer(streamIdle)
	defer idle.Stop()
	for {
		c.mu.Lock()
		c.dropBehindLocked(f)
		live := st.live
		c.mu.Unlock()
		if live == 0 {
			return
		}
		select {
		case <-st.kick:
			continue
		case <-f.parent.Done():
		case <-idle.C:
		}
		break
	}
	c.mu.Lock()
	for j := 0; j < st.published; j++ {
		c.dropLocked(f, j)
	}
	c.mu.Unlock()
}

// claim waits until block j of stream f is claimed. It reports false when
// the stream should stop there: the block is present already, the cache or
// the stream is done, or the reader stopped moving on.
func (c *Cache) claim(ctx context.Context, f *flight, j int) bool {
	var idle *time.Timer
	for {
		if ctx.Err() != nil {
			return false // a jump or a close: claimed blocks go to whoever waits
		}
		c.mu.Lock()
		c.extendLocked(f)
		claimed, ended := f.stream.claimed, f.stream.ended
		c.mu.Unlock()
		if j < claimed {
			return true
		}
		if ended {
			return false
		}
		if idle == nil {
			idle = time.NewTimer(streamIdle)
			defer idle.Stop()
		}
		select {
		case <-f.stream.kick:
		case <-ctx.Done():
			return false
		case <-idle.C:
			return false
		}
	}
}

// streamBuffer returns the buffer for block j of stream f: a recycled one
// from pool (nil: the stream's blocks are plain memory, and bb is nil).
func (c *Cache) streamBuffer(f *flight, pool *bufPool, j int) (bb *buf, blk []byte) {
	size := int(c.blockLen(f.b, f.first+int64(j)))
	if pool == nil {
		return nil, make([]byte, size)
	}
	bb = pool.get(size)
	return bb, bb.data
}

// publishStreamLocked publishes block j of stream f, held in blk (from
// bb when recycled), and counts it published and live.
func (c *Cache) publishStreamLocked(f *flight, j int, bb *buf, blk []byte) {
	if bb != nil {
		f.bufs[j] = bb
	}
	c.publishLocked(f, j, blk)
	f.stream.published = j + 1
	f.stream.live++
}

// streamBlocks reads the blocks of stream f in order, claiming each first,
// and returns the blob index of the first block it did not publish. Each
// block must arrive within FetchTimeout of being asked for; the stream as a
// whole has no deadline.
func (c *Cache) streamBlocks(f *flight) (stop int64, err error) {
	if f.stream.fromDisk {
		return c.diskStreamBlocks(f), nil
	}
	b := f.b
	ss := b.src
	ctx, cancel := context.WithCancelCause(f.parent)
	defer cancel(nil)
	errBlockTimeout := fmt.Errorf("no block within %v: %w", c.opts.FetchTimeout, context.DeadlineExceeded)
	deadline := time.AfterFunc(c.opts.FetchTimeout, func() { cancel(errBlockTimeout) })
	defer deadline.Stop()

	off := f.first * c.bs
	n := min(b.size, (f.first+int64(f.n))*c.bs) - off
	j := 0
	fail := func(err error) (int64, error) {
		c.st.sourceErrors.Add(1)
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && f.parent.Err() == nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return f.first + int64(j), fmt.Errorf("layercache: stream %s bytes %d-%d: %w", b.key, off, off+n, err)
	}
	c.st.sourceRequests.Add(1)
	c.st.readaheadFetches.Add(1)
	c.st.inFlight.Add(1)
	defer c.st.inFlight.Add(-1)
	rc, err := ss.Open(ctx, off, n)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()

	// The disk tier is written behind the stream by one goroutine holding
	// a reference to each block until it is written; the channel bounds
	// what waits, and the stream waits when it is full.
	type diskJob struct {
		j   int
		d   []byte
		ref *buf
	}
	var toDisk chan diskJob
	if c.disk != nil {
		toDisk = make(chan diskJob, max(c.opts.Readahead, 1))
		diskDone := make(chan struct{})
		go func() {
			defer close(diskDone)
			for job := range toDisk {
				c.disk.writeBlock(b.key, c.bs, f.first+int64(job.j), job.d)
				if job.ref != nil {
					job.ref.release()
				}
			}
		}()
		defer func() {
			close(toDisk)
			<-diskDone
		}()
	}

	var pool *bufPool
	if f.bufs != nil {
		pool = poolFor(int(c.bs))
	}
	var got int64
	for ; j < f.n; j++ {
		if j > 0 {
			deadline.Stop()
			if !c.claim(ctx, f, j) {
				return f.first + int64(j), nil // stopped; nothing claimed is left unread
			}
			deadline.Reset(c.opts.FetchTimeout)
		}
		bb, blk := c.streamBuffer(f, pool, j)
		m, err := io.ReadFull(rc, blk)
		got += int64(m)
		c.st.bytesFetched.Add(int64(m))
		if err == nil && j == f.n-1 {
			// The end of the span: the stream must end here too.
			var one [1]byte
			switch m, rerr := io.ReadFull(rc, one[:]); {
			case m > 0:
				err = fmt.Errorf("stream longer than the %d bytes asked for", n)
			case rerr != io.EOF:
				err = rerr
			}
		}
		if err != nil {
			if bb != nil {
				bb.release()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("got %d of %d bytes: %w: %w", got, n, ErrShortRead, io.ErrUnexpectedEOF)
			}
			return fail(err)
		}
		var job diskJob
		c.mu.Lock()
		c.publishStreamLocked(f, j, bb, blk)
		if toDisk != nil {
			job = diskJob{j: j, d: blk, ref: bb}
			if bb != nil {
				bb.ref()
			}
		}
		c.dropBehindLocked(f)
		c.mu.Unlock()
		if toDisk != nil {
			toDisk <- job // the writer always drains: a block published is written
		}
	}
	return f.first + int64(f.n), nil
}
