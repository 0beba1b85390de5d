package layercache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// A stream is how a sequential reader of a StreamSource reads ahead: one
// ranged request from the first missing block towards the end of the blob,
// read block by block and published as each block arrives, kept at most the
// reader's readahead window ahead of it. Against a registry every request
// costs a round trip before its first byte (and a server-side setup; for the
// reference registry, several milliseconds), so a sequential pass made of
// many ranged requests runs well below the speed of one plain GET; a stream
// pays that once.
//
// A stream claims a block (registers it in Cache.inflight) only right
// before reading it, and only while the block is within the window: other
// readers never wait on a block the stream may not reach. It stops,
// successfully, at the first block already present (memory, disk, another
// fetch), when the reader jumps elsewhere or closes (its context), after
// streamIdle without the reader moving on, or at the end of its span; the
// reader's readahead starts the next one where needed. Once a block is
// published and handed on (to the disk tier, or past the last few blocks
// without one), the stream drops it, so a stream holds a bounded number of
// blocks however long it runs.

const (
	// maxStreamBlocks bounds the span of one stream request.
	maxStreamBlocks = 4096
	// streamIdle ends a stream whose reader stopped moving on, so it does
	// not hold a connection open for nothing.
	streamIdle = 30 * time.Second
	// streamKeep is how many of its latest blocks a stream without a disk
	// tier keeps for waiters that have not woken yet.
	streamKeep = 2
)

// streamState is the part of a flight only streams have.
type streamState struct {
	reader *Reader       // whose window throttles the stream
	kick   chan struct{} // the reader moved on (capacity 1)
	cancel context.CancelFunc
}

// startStreamLocked registers a stream of blob blocks from i on for r and
// returns it; the caller starts it with go c.runFlight(f) after unlocking.
// It takes one of r's fetch slots and returns nil when none is free.
func (r *Reader) startStreamLocked(i int64, g *getOpts) *flight {
	c := r.c
	select {
	case r.sem <- struct{}{}:
	default:
		return nil
	}
	ctx, cancel := context.WithCancel(r.ctx)
	n := int(min(r.b.nblocks-i, maxStreamBlocks))
	f := &flight{
		b:         r.b,
		first:     i,
		n:         n,
		keep:      g.keep,
		parent:    ctx,
		sem:       g.sem,
		holdsSlot: true,
		owner:     g.owner,
		readahead: true,
		blocks:    make([][]byte, n),
		progress:  make(chan struct{}),
		stream:    &streamState{reader: r, kick: make(chan struct{}, 1), cancel: cancel},
	}
	// Claimed block by block: only the first block now.
	c.inflight[blockKey{r.b.id, i}] = f
	c.wg.Add(1)
	r.streamF.Store(f)
	return f
}

// kick tells a throttled stream that its reader moved on.
func (s *streamState) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// runStream runs the stream f and then publishes how it ended.
func (c *Cache) runStream(f *flight) {
	defer c.wg.Done()
	st := f.stream
	defer st.cancel()
	defer func() { <-f.sem }()
	stop, err := c.streamBlocks(f)
	r := st.reader
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
	c.forgetLocked(f)
	c.mu.Unlock()
	r.streamF.CompareAndSwap(f, nil)
}

// claim registers block j of stream f once it is within its reader's
// window. It reports false when the stream should stop there: the block is
// present already, the cache or the stream is done, or the reader stopped
// moving on.
func (c *Cache) claim(ctx context.Context, f *flight, j int) bool {
	r := f.stream.reader
	i := f.first + int64(j)
	k := blockKey{f.b.id, i}
	var idle *time.Timer
	for {
		c.mu.Lock()
		if c.closed || c.inflight[k] != nil || c.memContains(k) || r.privateHas(i) ||
			(c.disk != nil && c.disk.hasBlock(f.b.key, c.bs, i)) {
			c.mu.Unlock()
			return false
		}
		if i <= r.lastBlock.Load()+r.window.Load() {
			c.inflight[k] = f
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
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

// releaseLocked drops blocks [released, upTo) of stream f: they are in
// memory, on disk or with the owner by now.
func (c *Cache) releaseLocked(f *flight, upTo int) {
	for j := f.released; j < upTo; j++ {
		k := blockKey{f.b.id, f.first + int64(j)}
		if c.inflight[k] == f {
			delete(c.inflight, k)
		}
		f.blocks[j] = nil
	}
	if upTo > f.released {
		f.released = upTo
	}
}

// streamBlocks reads the blocks of stream f in order, claiming each first,
// and returns the blob index of the first block it did not publish. Each
// block must arrive within FetchTimeout of being asked for; the stream as a
// whole has no deadline.
func (c *Cache) streamBlocks(f *flight) (stop int64, err error) {
	b := f.b
	ss := b.src.(StreamSource)
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

	// The disk tier is written behind the stream by one goroutine, which
	// drops each block once written; the channel bounds what waits.
	var toDisk chan int
	diskDone := make(chan struct{})
	if c.disk != nil {
		toDisk = make(chan int, max(c.opts.Readahead, 1))
		go func() {
			defer close(diskDone)
			for j := range toDisk {
				c.disk.writeBlock(b.key, c.bs, f.first+int64(j), f.blocks[j])
				c.mu.Lock()
				c.releaseLocked(f, j+1)
				c.mu.Unlock()
			}
		}()
		defer func() {
			close(toDisk)
			<-diskDone
		}()
	}

	var got int64
	for ; j < f.n; j++ {
		if j > 0 {
			deadline.Stop()
			if !c.claim(ctx, f, j) {
				return f.first + int64(j), nil // stopped early; nothing claimed is left unread
			}
			deadline.Reset(c.opts.FetchTimeout)
		}
		blk := make([]byte, c.blockLen(b, f.first+int64(j)))
		m, err := io.ReadFull(rc, blk)
		got += int64(m)
		c.st.bytesFetched.Add(int64(m))
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(fmt.Errorf("got %d of %d bytes: %w: %w", got, n, ErrShortRead, io.ErrUnexpectedEOF))
		}
		if err != nil {
			return fail(err)
		}
		if j == f.n-1 {
			// The end of the span: the stream must end here too.
			var one [1]byte
			switch m, err := io.ReadFull(rc, one[:]); {
			case m > 0:
				return fail(fmt.Errorf("stream longer than the %d bytes asked for", n))
			case err != io.EOF:
				return fail(err)
			}
		}
		c.mu.Lock()
		c.publishLocked(f, j, blk)
		if toDisk == nil {
			c.releaseLocked(f, j+1-streamKeep)
		}
		c.mu.Unlock()
		if toDisk != nil {
			select {
			case toDisk <- j:
			case <-ctx.Done():
				return fail(ctx.Err())
			}
		}
	}
	return f.first + int64(f.n), nil
}
