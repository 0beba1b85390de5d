package layercache

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// flight brings a run of contiguous blocks [first, first+n) of one blob:
// disk first, then one ranged Source read per sub-run still missing (a
// stream, when stream is set, reads its own way: stream.go). It publishes
// what it brings; it knows nothing of readers. Each block
// is published the moment it has arrived whole, so a reader waits for its
// own block, not for the whole run. Its blocks are registered in
// the flight table from creation until the disk writes are done, so
// every reader of those blocks finds it.
type flight struct {
	s         *scheduler
	b         *blob
	first     int64
	n         int
	keep      bool            // insert into the memory LRU; guarded by scheduler.mu
	parent    context.Context // the scheduler's, or a Reader's readahead context
	sem       chan struct{}   // the starting Reader's fetch slots; nil for none
	holdsSlot bool            // a slot was taken when the flight was made
	owner     *privateBlocks  // gets the blocks when !keep
	readahead bool

	// Guarded by scheduler.mu.
	blocks    [][]byte      // block j once it arrived whole, else nil
	progress  chan struct{} // closed and replaced when a block arrives or the flight ends
	finished  bool          // the flight ended; err says how
	err       error
	abandoned bool // failed because its parent was cancelled: waiters retry
	// bufs[j] is block j's recycled buffer (streams of readers that keep
	// blocks in memory); a reader taking blocks[j] takes a reference.
	bufs []*buf

	stream *stream // set for a stream, which claims its blocks as it goes
}

// run does the work of f and publishes the result.
func (f *flight) run() {
	s := f.s
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(f.parent, s.opts.FetchTimeout)
	defer cancel()
	fromSource := make([]bool, f.n)
	err := f.load(ctx, fromSource)

	s.mu.Lock()
	if err != nil {
		f.err = err
		f.abandoned = f.parent.Err() != nil
	}
	if f.keep {
		// A keeping reader may have joined after some blocks went to the
		// owner only.
		for j, d := range f.blocks {
			if d != nil {
				s.store.add(f.b, f.first+int64(j), d)
			}
		}
	}
	f.finished = true
	close(f.progress)
	if err != nil {
		f.forgetLocked() // what did not arrive is fetched again by the next reader
	}
	s.mu.Unlock()
	// Only blocks that arrived whole were published; they are good even if
	// a later block of the run failed.
	for j, src := range fromSource {
		if src && f.blocks[j] != nil {
			s.store.save(f.b, f.first+int64(j), f.blocks[j])
		}
	}
	if err == nil {
		s.mu.Lock()
		f.forgetLocked()
		s.mu.Unlock()
	}
}

// forgetLocked unregisters f's blocks.
func (f *flight) forgetLocked() {
	for j := 0; j < f.n; j++ {
		f.s.flights.forget(f.b, f.first+int64(j), f)
	}
}

// load reads f's blocks from disk where whole, and fetches the rest with
// one ranged read per contiguous sub-run, publishing each block as it
// arrives. fromSource[j] reports that block j came from the Source.
func (f *flight) load(ctx context.Context, fromSource []bool) error {
	if f.holdsSlot {
		defer func() { <-f.sem }()
	}
	missing := make([]bool, f.n)
	for j := range missing {
		i := f.first + int64(j)
		if d, ok := f.s.store.load(f.b, i, nil); ok {
			f.publish(j, d)
		} else {
			missing[j] = true
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
		if err := f.fetch(ctx, j, end); err != nil {
			return err
		}
		j = end + 1
	}
	return nil
}

// fetch reads blocks [j, end] of f (relative indexes) with one ranged read.
func (f *flight) fetch(ctx context.Context, j, end int) error {
	s, b := f.s, f.b
	a, z := f.first+int64(j), f.first+int64(end)
	off := a * s.bs
	n := z*s.bs + b.blockLen(z) - off
	if b.stream && j < end {
		return f.fetchStream(ctx, j, end, off, n)
	}
	buf := make([]byte, n)
	if err := readRange(ctx, s.st, b, buf, off, f.readahead); err != nil {
		return fmt.Errorf("layercache: fetch %s bytes %d-%d (blocks %d-%d): %w", b.key, off, off+n, a, z, err)
	}
	for k := j; k <= end; k++ {
		lo := int64(k-j) * s.bs
		if err := s.store.vet(b, f.first+int64(k), buf[lo:lo+b.blockLen(f.first+int64(k))]); err != nil {
			return fmt.Errorf("layercache: fetch %s blocks %d-%d: %w", b.key, a, z, err)
		}
	}
	if j == end {
		f.publish(j, buf)
		return nil
	}
	// One allocation per block, so the memory LRU frees blocks one by one
	// and its byte count is the memory it really holds.
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := j; k <= end; k++ {
		lo := int64(k-j) * s.bs
		blk := make([]byte, b.blockLen(f.first+int64(k)))
		copy(blk, buf[lo:])
		f.publishLocked(k, blk)
	}
	return nil
}

// fetchStream reads blocks [j, end] of f with one Open of their span,
// straight into per-block buffers, publishing each block as it arrives
// except the last, which waits for the end of the stream (a stream running
// long is a broken Source). A stream of the whole blob is published only
// after its end, where a verifying Source reports a digest mismatch.
func (f *flight) fetchStream(ctx context.Context, j, end int, off, n int64) error {
	s, b := f.s, f.b
	a, z := f.first+int64(j), f.first+int64(end)
	s.st.sourceRequests.Add(1)
	if f.readahead {
		s.st.readaheadFetches.Add(1)
	}
	s.st.inFlight.Add(1)
	defer s.st.inFlight.Add(-1)
	fail := func(err error) error {
		s.st.sourceErrors.Add(1)
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
		blk := make([]byte, b.blockLen(f.first+int64(k)))
		m, err := io.ReadFull(rc, blk)
		got += int64(m)
		s.st.bytesFetched.Add(int64(m))
		b.fetched.Add(int64(m))
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(shortRead(got, n))
		}
		if err == nil {
			err = s.store.vet(b, f.first+int64(k), blk)
		}
		if err != nil {
			return fail(err)
		}
		if whole || k == end {
			held = append(held, blk)
		} else {
			f.publish(k, blk)
		}
	}
	if err := readToEnd(rc, n); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	for k, blk := range held {
		f.publishLocked(end-len(held)+1+k, blk)
	}
	s.mu.Unlock()
	return nil
}

// shortRead is the error of a read that got fewer than the n bytes asked
// for: ErrShortRead and io.ErrUnexpectedEOF, never io.EOF, which callers
// would take for the end of the blob.
func shortRead(got, n int64) error {
	return fmt.Errorf("got %d of %d bytes: %w: %w", got, n, ErrShortRead, io.ErrUnexpectedEOF)
}

// readToEnd checks that rc, which delivered the n bytes asked for, ends
// there: a stream over a whole blob reports a digest mismatch at its end
// (a registry blob does), and a longer stream is a broken Source.
func readToEnd(rc io.Reader, n int64) error {
	var one [1]byte
	switch m, err := io.ReadFull(rc, one[:]); {
	case m > 0:
		return fmt.Errorf("stream longer than the %d bytes asked for", n)
	case err != io.EOF:
		return err
	}
	return nil
}

// publishLocked makes block j of f, arrived whole, visible to waiters and
// to the memory LRU (or to the SkipMemory reader that owns the flight). A
// recycled buffer stays with the flight: see bufpool.go.
func (f *flight) publishLocked(j int, d []byte) {
	f.blocks[j] = d
	i := f.first + int64(j)
	if f.bufs != nil && f.bufs[j] != nil {
		// Readers take it from the flight, with a reference.
	} else if f.keep {
		f.s.store.add(f.b, i, d)
	} else if f.owner != nil {
		// Under scheduler.mu: a flight stashes a block with its owner
		// before it leaves the flight table, so a block is always found in one
		// of the two.
		f.owner.add(i, d)
	}
	close(f.progress)
	f.progress = make(chan struct{})
}

func (f *flight) publish(j int, d []byte) {
	f.s.mu.Lock()
	f.publishLocked(j, d)
	f.s.mu.Unlock()
}

// readRange reads exactly len(p) bytes of b at off with one ranged read of
// the Source, counted in the stats. A short read is an error
// (ErrShortRead), never a success or an io.EOF.
func readRange(ctx context.Context, st *counters, b *blob, p []byte, off int64, readahead bool) error {
	st.sourceRequests.Add(1)
	if readahead {
		st.readaheadFetches.Add(1)
	}
	st.inFlight.Add(1)
	got, err := b.src.ReadAt(ctx, p, off)
	st.inFlight.Add(-1)
	if got > 0 {
		st.bytesFetched.Add(int64(min(got, len(p))))
		b.fetched.Add(int64(min(got, len(p))))
	}
	if got == len(p) && errors.Is(err, io.EOF) {
		err = nil // io.ReaderAt may report EOF with a full read of the tail
	}
	if got != len(p) && (err == nil || errors.Is(err, io.EOF)) {
		// Never let a short read look like the end of the blob to callers.
		err = shortRead(int64(got), int64(len(p)))
	}
	if err != nil {
		st.sourceErrors.Add(1)
	}
	return err
}
