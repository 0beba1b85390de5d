package layercache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// A stream is a sequential reader's readahead as one flight: one ranged
// request (or, fromDisk, the disk tier's blocks) from the first missing
// block on, read block by block into recycled buffers and published as each
// arrives, kept at most the reader's window ahead of it. Contracts (the
// design is in docs/design/layercache.md):
//   - It claims blocks (registers them in the flight table) as the window reaches
//     them, so concurrent requests for them wait on it, and stops,
//     successfully, before the first block present elsewhere, on a jump or
//     close (its context), after streamIdle without the reader moving on,
//     or at the end of its span. Claimed blocks it did not bring are
//     fetched again by whoever waits for them.
//   - A network stream of the whole blob publishes its last block only
//     after the Source's end, where a digest mismatch fails it.
//   - Its blocks stay out of the memory LRU; each is dropped once read
//     whole, or two windows behind the reader, or when the stream ends
//     lingering; a recycled buffer returns to its pool only when the last
//     reader holding it is done.

const (
	// maxStreamBlocks bounds the span of one stream request.
	maxStreamBlocks = 1024
	// streamIdle ends a stream whose reader stopped moving on, so it does
	// not hold a connection and buffers for nothing.
	streamIdle = 10 * time.Second
)

// stream is the part of a flight only streams have. Guarded by
// scheduler.mu except the fields set at creation.
type stream struct {
	f      *flight
	s      *scheduler
	pace   *pacer         // the reader's window throttles the stream
	priv   *privateBlocks // the reader's, if SkipMemory: presence checks
	kick   chan struct{}  // the reader moved on or took bytes (capacity 1)
	cancel context.CancelFunc

	claimed   int     // blocks [0, claimed) are registered
	ended     bool    // a present block (or the cache's end) ends the stream at claimed
	published int     // blocks [0, published) arrived
	consumed  []int64 // bytes of block j readers took
	waiters   []int32 // readers waiting for block j: it is not dropped under them
	dropped   []bool  // block j was dropped (released)
	live      int     // published blocks not dropped yet

	fromDisk bool // reads the disk tier, not the Source
}

// extendLocked claims the blocks that the reader's window now reaches, up
// to the first block present already, which ends the stream.
func (st *stream) extendLocked() {
	f, s := st.f, st.s
	if s.closed || f.parent.Err() != nil || f.finished {
		// Closed, or cancelled by a jump: the reader's window is
		// somewhere else now. Finished: the reader may still call moved
		// before it forgets the stream, and a block claimed then would
		// wait on a flight that never brings it (or report its error).
		st.ended = true
	}
	limit := st.pace.front.Load() + st.pace.window.Load()
	for !st.ended && st.claimed < f.n {
		i := f.first + int64(st.claimed)
		if i > limit {
			return
		}
		if st.fromDisk && s.flights.held(f.b, st.priv, i) || !st.fromDisk && s.flights.present(f.b, st.priv, i, tierDisk) {
			st.ended = true
			return
		}
		s.flights.set(f.b, i, f)
		st.claimed++
	}
}

// moved is called by the stream's reader at each read: it claims what the
// window now reaches (before the reader's own lookups, so blocks the
// stream will bring are waited for rather than fetched twice), drops
// blocks the reader left behind, and wakes the stream.
func (st *stream) moved() {
	st.s.mu.Lock()
	st.extendLocked()
	st.dropBehindLocked()
	st.s.mu.Unlock()
	st.wake()
}

// wake tells a waiting stream that its reader moved on or took bytes.
func (st *stream) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// isLast reports whether block j is the blob's last, which stays a while
// after it is taken whole: readers of a file's end often read it twice.
func (st *stream) isLast(j int) bool { return st.f.first+int64(j) == st.f.b.nblocks-1 }

// unwaitLocked settles a reader's wait for block j: a block taken whole
// and no longer waited for is dropped.
func (st *stream) unwaitLocked(j int) {
	st.waiters[j]--
	if st.waiters[j] == 0 && !st.dropped[j] && j < st.published && st.consumed[j] >= int64(len(st.f.blocks[j])) && !st.isLast(j) {
		st.dropLocked(j)
	}
}

// consumeLocked accounts that a reader took bytes [lo, hi) of block j; a
// block taken whole is dropped at once.
func (st *stream) consumeLocked(j int, lo, hi int64) {
	st.consumed[j] += hi - lo
	if st.consumed[j] >= int64(len(st.f.blocks[j])) && st.waiters[j] == 0 && !st.isLast(j) {
		st.dropLocked(j)
		st.wake()
	}
}

// dropBehindLocked drops the published blocks the reader has moved two
// windows past (taken only in part, or not at all). Requests still pending
// from before are within a window behind the latest read; the second is
// slack for requests whose goroutine was slow to start.
func (st *stream) dropBehindLocked() {
	behind := st.pace.lastFirst.Load() - 2*max(st.pace.window.Load(), 4) - st.f.first
	for j := 0; j < st.published && int64(j) < behind; j++ {
		if st.waiters[j] == 0 {
			st.dropLocked(j)
		}
	}
}

// dropLocked drops published block j: no reader finds it any more, and
// its buffer goes back to the pool once the readers holding it are done.
func (st *stream) dropLocked(j int) {
	f := st.f
	if st.dropped[j] || j >= st.published {
		return
	}
	st.dropped[j] = true
	st.live--
	f.s.flights.forget(f.b, f.first+int64(j), f)
	f.blocks[j] = nil
	if f.bufs != nil && f.bufs[j] != nil {
		f.bufs[j].release()
		f.bufs[j] = nil
	}
}

// run brings the stream's blocks, then lingers until they are consumed.
func (st *stream) run() {
	f, s := st.f, st.s
	defer s.wg.Done()
	defer st.cancel()
	var stop int64
	var err error
	if st.fromDisk {
		stop = st.readDisk()
	} else {
		stop, err = st.readSource()
	}
	if st.pace.raNext.Load() > stop {
		st.pace.raNext.Store(stop) // read ahead again from where the stream stopped
	}
	s.mu.Lock()
	if err != nil {
		f.err = err
		f.abandoned = f.parent.Err() != nil
	}
	f.finished = true
	close(f.progress)
	// Claimed blocks that never arrived: whoever wants them fetches them.
	for j := st.published; j < st.claimed; j++ {
		s.flights.forget(f.b, f.first+int64(j), f)
	}
	s.mu.Unlock()
	st.pace.stream.CompareAndSwap(f, nil)

	// Linger until the published blocks are taken, the reader moves past
	// them or goes away.
	idle := time.NewTimer(streamIdle)
	defer idle.Stop()
	for {
		s.mu.Lock()
		st.dropBehindLocked()
		live := st.live
		s.mu.Unlock()
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
	s.mu.Lock()
	for j := 0; j < st.published; j++ {
		st.dropLocked(j)
	}
	s.mu.Unlock()
}

// claim waits until block j is claimed. It reports false when the stream
// should stop there: the block is present already, the cache or the
// stream is done, or the reader stopped moving on.
func (st *stream) claim(ctx context.Context, j int) bool {
	var idle *time.Timer
	for {
		if ctx.Err() != nil {
			return false // a jump or a close: claimed blocks go to whoever waits
		}
		st.s.mu.Lock()
		st.extendLocked()
		claimed, ended := st.claimed, st.ended
		st.s.mu.Unlock()
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
		case <-st.kick:
		case <-ctx.Done():
			return false
		case <-idle.C:
			return false
		}
	}
}

// buffer returns the buffer for block j: a recycled one from pool (nil:
// the stream's blocks are plain memory, and bb is nil).
func (st *stream) buffer(pool *bufPool, j int) (bb *buf, blk []byte) {
	size := int(st.f.b.blockLen(st.f.first + int64(j)))
	if pool == nil {
		return nil, make([]byte, size)
	}
	bb = pool.get(size)
	return bb, bb.data
}

// pool is where the stream's buffers come from; nil when a SkipMemory
// reader keeps them privately (out of reference counting).
func (st *stream) pool() *bufPool {
	if st.f.bufs == nil {
		return nil
	}
	return poolFor(int(st.s.bs))
}

// publishLocked publishes block j, held in blk (from bb when recycled),
// and counts it published and live.
func (st *stream) publishLocked(j int, bb *buf, blk []byte) {
	if bb != nil {
		st.f.bufs[j] = bb
	}
	st.f.publishLocked(j, blk)
	st.published = j + 1
	st.live++
}

// readDisk reads the blocks of a disk stream in order, claiming each
// first, and returns the blob index of the first block it did not publish.
// A block missing or bad on disk (removed, as on every disk read) stops it:
// whoever waits for it fetches it the usual way.
func (st *stream) readDisk() (stop int64) {
	f, s := st.f, st.s
	pool := st.pool()
	for j := 0; j < f.n; j++ {
		if j > 0 && !st.claim(f.parent, j) {
			return f.first + int64(j)
		}
		i := f.first + int64(j)
		bb, blk := st.buffer(pool, j)
		if _, ok := s.store.load(f.b, i, blk); !ok {
			if bb != nil {
				bb.release()
			}
			return i
		}
		s.mu.Lock()
		st.publishLocked(j, bb, blk)
		st.dropBehindLocked()
		s.mu.Unlock()
	}
	return f.first + int64(f.n)
}

// readSource reads the blocks of a network stream in order with one Open,
// claiming each first, and returns the blob index of the first block it
// did not publish. Each block must arrive within FetchTimeout of being
// asked for; the stream as a whole has no deadline.
func (st *stream) readSource() (stop int64, err error) {
	f, s := st.f, st.s
	b := f.b
	ctx, cancel := context.WithCancelCause(f.parent)
	defer cancel(nil)
	errBlockTimeout := fmt.Errorf("no block within %v: %w", s.opts.FetchTimeout, context.DeadlineExceeded)
	deadline := time.AfterFunc(s.opts.FetchTimeout, func() { cancel(errBlockTimeout) })
	defer deadline.Stop()

	off := f.first * s.bs
	n := min(b.size, (f.first+int64(f.n))*s.bs) - off
	j := 0
	fail := func(err error) (int64, error) {
		s.st.sourceErrors.Add(1)
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && f.parent.Err() == nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return f.first + int64(j), fmt.Errorf("layercache: stream %s bytes %d-%d: %w", b.key, off, off+n, err)
	}
	s.st.sourceRequests.Add(1)
	s.st.readaheadFetches.Add(1)
	s.st.inFlight.Add(1)
	defer s.st.inFlight.Add(-1)
	rc, err := b.src.Open(ctx, off, n)
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
	if s.opts.DiskDir != "" {
		toDisk = make(chan diskJob, max(s.opts.Readahead, 1))
		diskDone := make(chan struct{})
		go func() {
			defer close(diskDone)
			for job := range toDisk {
				s.store.save(b, f.first+int64(job.j), job.d)
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

	pool := st.pool()
	var got int64
	for ; j < f.n; j++ {
		if j > 0 {
			deadline.Stop()
			if !st.claim(ctx, j) {
				return f.first + int64(j), nil // stopped; nothing claimed is left unread
			}
			deadline.Reset(s.opts.FetchTimeout)
		}
		bb, blk := st.buffer(pool, j)
		m, err := io.ReadFull(rc, blk)
		got += int64(m)
		s.st.bytesFetched.Add(int64(m))
		b.fetched.Add(int64(m))
		if err == nil {
			err = s.store.vet(b, f.first+int64(j), blk)
		}
		if err == nil && j == f.n-1 {
			err = readToEnd(rc, n) // the end of the span: the stream must end here too
		}
		if err != nil {
			if bb != nil {
				bb.release()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = shortRead(got, n)
			}
			return fail(err)
		}
		var job diskJob
		s.mu.Lock()
		st.publishLocked(j, bb, blk)
		if toDisk != nil {
			job = diskJob{j: j, d: blk, ref: bb}
			if bb != nil {
				bb.ref() // before dropBehindLocked may release the stream's
			}
		}
		st.dropBehindLocked()
		s.mu.Unlock()
		if toDisk != nil {
			toDisk <- job // the writer always drains: a block published is written
		}
	}
	return f.first + int64(f.n), nil
}
