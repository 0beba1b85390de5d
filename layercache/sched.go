package layercache

// Lock order: scheduler.mu first. Under it only leaf locks are taken, one
// at a time: a memory shard's and diskTier.mu (through blockStore), a
// Reader's privateBlocks.mu, store.idsMu, a bufPool's. Nothing takes
// scheduler.mu while holding one of them.

import (
	"context"
	"fmt"
	"sync"
)

// scheduler brings blocks into storage and to readers: single-flight per
// block (flightTable), flights of ranged reads, streams, readahead, exact
// reads. It reaches storage only through blockStore. Calls go one way:
// sched.go → stream.go → flight.go → table.go → store.go → the tiers.
type scheduler struct {
	opts  Options
	bs    int64
	store blockStore
	st    *counters
	ctx   context.Context // cancelled by close; parent of every fetch

	cancel context.CancelFunc

	mu      sync.Mutex // guards closed, flights, and every flight's mutable state
	closed  bool
	flights flightTable
	wg      sync.WaitGroup // flight goroutines; Add only under mu while !closed
}

func newScheduler(opts Options, st blockStore, n *counters) *scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	return &scheduler{
		opts:    opts,
		bs:      opts.BlockSize,
		store:   st,
		st:      n,
		ctx:     ctx,
		cancel:  cancel,
		flights: flightTable{m: make(map[blockKey]*flight), store: st},
	}
}

// close cancels every flight and waits for them (and their disk writes).
// It reports false if it was closed already.
func (s *scheduler) close() bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return true
}

// getOpts says how one read obtains blocks.
type getOpts struct {
	keep  bool           // fetched blocks go into the memory LRU
	peek  bool           // memory lookups do not refresh recency
	sem   chan struct{}  // fetch slots of the calling Reader
	owner *privateBlocks // receives blocks of flights it starts when !keep
	// refs collects the recycled buffers the caller took: it releases them
	// once done with the blocks, whatever read returned.
	refs []*buf
	// off, end is the byte range the caller reads: what it takes of a
	// stream's block counts towards dropping the block.
	off, end int64
}

// readerOpts are the getOpts of r's reads and readahead.
func readerOpts(r *Reader) getOpts {
	return getOpts{keep: r.priv == nil, peek: r.priv != nil, sem: r.sem, owner: r.priv}
}

// readBlocks is the one fill path of a read of bytes [off, end) of r's
// blob: it fills out[j] with block first+j, every one of them, and returns
// the recycled buffers taken (appended to refs), which the caller releases
// once done with the blocks, whatever the error.
func (s *scheduler) readBlocks(ctx context.Context, r *Reader, first int64, out [][]byte, refs []*buf, off, end int64, plan pacePlan) ([]*buf, error) {
	g := readerOpts(r)
	g.refs, g.off, g.end = refs, off, end
	if r.priv != nil {
		r.priv.fill(first, out)
		if plan.tracked {
			r.priv.prune(first)
		}
	}
	if err := s.read(ctx, r, first, out, &g, plan); err != nil {
		return g.refs, err
	}
	if r.priv != nil {
		r.priv.keep(first, out, g.refs)
	}
	return g.refs, nil
}

type waitRef struct {
	f *flight
	i int64
}

// read fills out[j] with block first+j of r's blob for every nil out[j],
// and tops up readahead as plan says. Each block comes from memory or r's
// private blocks, from a flight already bringing it (a ranged read or a
// stream), or from a new flight of its missing run (disk first, then one
// ranged read); readahead's sources are chosen by sourceLocked. It returns
// ctx.Err() as soon as ctx is done, while the flights go on for everyone
// else.
func (s *scheduler) read(ctx context.Context, r *Reader, first int64, out [][]byte, g *getOpts, plan pacePlan) error {
	if f := r.pace.stream.Load(); f != nil {
		f.stream.moved()
	} else if plan.speculate {
		s.speculate(r)
	}
	b := r.b
	all, err := s.memFill(b, first, out, g.peek)
	if err != nil {
		return err
	}
	if all {
		s.readahead(r, plan)
		return nil
	}
	last := first + int64(len(out)) - 1
	maxRun := int64(s.opts.MaxFetchBlocks)
	var waitBuf [4]waitRef
	waits := waitBuf[:0]
	var toStart []*flight
	startedRA := false
	var mismatch error
	for {
		waits, toStart = waits[:0], toStart[:0]
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		runStart := int64(-1)
		closeRun := func(end int64) {
			if runStart >= 0 {
				f := s.newFlightLocked(b, runStart, end, g, s.ctx, false)
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
			d, ok := s.store.get(b, i, g.peek)
			if !ok && g.owner != nil {
				d = g.owner.get(i)
				ok = d != nil
			}
			f := s.flights.get(b, i)
			if !ok && f != nil {
				// Arrived already, but kept out of memory (a SkipMemory
				// reader's flight, a stream) or evicted at once by a
				// small bound.
				d = s.takeLocked(f, int(i-f.first), g)
				ok = d != nil
			}
			if ok {
				if int64(len(d)) != b.blockLen(i) {
					// Two Sources disagree on the size of one key. Fail,
					// after starting the flights already registered.
					mismatch = fmt.Errorf("layercache: %s block %d: cached %d bytes, blob size %d wants %d", b.key, i, len(d), b.size, b.blockLen(i))
				}
				out[i-first] = d
				closeRun(i - 1)
				continue
			}
			s.st.memMisses.Add(1)
			if f != nil {
				if g.keep {
					f.keep = true
				}
				s.st.sharedWaits.Add(1)
				s.awaitLocked(f, i)
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
		s.mu.Unlock()
		for _, f := range toStart {
			s.start(f)
		}
		if !startedRA {
			// After the caller's own fetches, so they get slots first.
			startedRA = true
			s.readahead(r, plan)
		}
		if mismatch != nil {
			return mismatch
		}
		if len(waits) == 0 {
			return nil
		}
		retry, err := s.wait(ctx, waits, first, out, g)
		if err != nil || !retry {
			return err
		}
	}
}

// memFill fills the nil entries of out from memory without taking s.mu:
// the hit path. It reports whether every block was found.
func (s *scheduler) memFill(b *blob, first int64, out [][]byte, peek bool) (bool, error) {
	all := true
	for j := range out {
		if out[j] != nil {
			continue
		}
		i := first + int64(j)
		d, ok := s.store.get(b, i, peek)
		if !ok {
			all = false
			continue
		}
		if want := b.blockLen(i); int64(len(d)) != want {
			return false, fmt.Errorf("layercache: %s block %d: cached %d bytes, blob size %d wants %d", b.key, i, len(d), b.size, want)
		}
		out[j] = d
	}
	return all, nil
}

// wait fills out from the flights in waits as their blocks arrive. It
// reports retry when a flight was abandoned by its reader before bringing
// a block, or a stream dropped it: the caller looks for that block again.
func (s *scheduler) wait(ctx context.Context, waits []waitRef, first int64, out [][]byte, g *getOpts) (retry bool, err error) {
	left := waits // not yet settled: a stream keeps their blocks for them
	defer func() {
		if len(left) > 0 {
			s.mu.Lock()
			for _, w := range left {
				s.unwaitLocked(w.f, w.i)
			}
			s.mu.Unlock()
		}
	}()
	for _, w := range waits {
		for {
			s.mu.Lock()
			f := w.f
			d := s.takeLocked(f, int(w.i-f.first), g)
			finished, ferr, abandoned, progress := f.finished, f.err, f.abandoned, f.progress
			dropped := f.stream != nil && f.stream.dropped[w.i-f.first]
			settled := d != nil || dropped || finished
			if settled {
				s.unwaitLocked(f, w.i)
				left = left[1:]
			}
			s.mu.Unlock()
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
			case <-s.ctx.Done():
				return false, ErrClosed
			}
		}
	}
	return retry, nil
}

// takeLocked returns block j of f for g: with a reference if it is a
// recycled buffer, and, from a stream, counting the bytes g will read.
func (s *scheduler) takeLocked(f *flight, j int, g *getOpts) []byte {
	d := f.blocks[j]
	if d == nil {
		return nil
	}
	if f.bufs != nil && f.bufs[j] != nil {
		f.bufs[j].ref()
		g.refs = append(g.refs, f.bufs[j])
	}
	if f.stream != nil {
		start := (f.first + int64(j)) * s.bs
		lo, hi := max(g.off, start), min(g.end, start+int64(len(d)))
		if hi > lo {
			f.stream.consumeLocked(j, lo, hi)
		}
	}
	return d
}

// awaitLocked notes that a reader waits for block i of f (a stream keeps
// its blocks for their waiters); wait settles it with unwaitLocked.
func (s *scheduler) awaitLocked(f *flight, i int64) {
	if f.stream != nil {
		f.stream.waiters[i-f.first]++
	}
}

// unwaitLocked settles a wait noted by awaitLocked.
func (s *scheduler) unwaitLocked(f *flight, i int64) {
	if f.stream != nil {
		f.stream.unwaitLocked(int(i - f.first))
	}
}

// start runs f, made by newFlightLocked or newStreamLocked, on its own
// goroutine.
func (s *scheduler) start(f *flight) {
	if f.stream != nil {
		go f.stream.run()
	} else {
		go f.run()
	}
}

// newFlightLocked registers a flight for blocks [a, z] and accounts its
// goroutine; the caller starts it with s.start(f) after unlocking.
func (s *scheduler) newFlightLocked(b *blob, a, z int64, g *getOpts, parent context.Context, readahead bool) *flight {
	f := &flight{
		s:         s,
		b:         b,
		first:     a,
		n:         int(z - a + 1),
		keep:      g.keep,
		parent:    parent,
		sem:       g.sem,
		owner:     g.owner,
		readahead: readahead,
		blocks:    make([][]byte, z-a+1),
		progress:  make(chan struct{}),
	}
	for i := a; i <= z; i++ {
		s.flights.set(b, i, f)
	}
	s.wg.Add(1)
	return f
}

// source is where readahead gets a block that is not held.
type source int

const (
	fromHeld       source = iota // memory, the reader's private blocks or a flight: nothing to start
	fromStream                   // the reader's running stream claims it as the reader moves on
	fromDiskStream               // the disk tier's index knows it: a disk stream from here
	fromNetStream                // missing everywhere, streamable: a network stream from here
	fromRun                      // a ranged flight of a piece (disk first, then one ranged read)
)

// sourceLocked decides where readahead (and speculation) gets block i of
// r's blob, given r's running stream active.
func (s *scheduler) sourceLocked(r *Reader, i int64, active *flight) source {
	switch {
	case s.flights.held(r.b, r.priv, i):
		return fromHeld
	case active != nil && i < active.first+int64(active.n):
		return fromStream
	case active != nil:
		return fromRun
	case s.store.has(r.b, i, tierDiskIndex):
		// Read ahead from disk into recycled buffers rather than a
		// flight per piece.
		return fromDiskStream
	case r.b.stream && !s.store.has(r.b, i, tierDisk):
		// One stream from here on rather than a request per piece.
		return fromNetStream
	}
	return fromRun
}

// readahead starts fetches for the missing blocks of plan's span, in
// pieces of at most plan.piece blocks, only while r has free fetch slots:
// readahead never makes a reader's own misses wait for a slot long. It
// advances r's readahead frontier past what it launched or found present;
// what it could not launch is tried again at the next read.
func (s *scheduler) readahead(r *Reader, plan pacePlan) {
	from, to, piece := plan.raFrom, plan.raTo, plan.raPiece
	if !plan.ra || from > to || r.closed.Load() {
		return
	}
	g := readerOpts(r)
	g.peek = false
	var toStart []*flight
	s.mu.Lock()
	if !s.closed {
		active := r.pace.stream.Load()
		runStart := int64(-1)
		full := false
		next := from // first block neither launched nor found present
		launch := func(end int64) {
			if runStart < 0 || full {
				return
			}
			select {
			case r.sem <- struct{}{}:
				f := s.newFlightLocked(r.b, runStart, end, &g, r.ctx, true)
				f.holdsSlot = true
				toStart = append(toStart, f)
				next = end + 1
			default:
				full = true
			}
			runStart = -1
		}
	blocks:
		for i := from; i <= to && !full; i++ {
			switch src := s.sourceLocked(r, i, active); src {
			case fromHeld:
				launch(i - 1)
				if !full {
					next = i + 1
				}
				continue
			case fromStream:
				launch(i - 1)
				break blocks
			case fromDiskStream, fromNetStream:
				launch(i - 1)
				if !full {
					toStart = append(toStart, s.newStreamLocked(r, i, &g, src == fromDiskStream))
					next = i + 1
				}
				break blocks
			}
			if runStart < 0 {
				runStart = i
			}
			if i-runStart+1 == piece {
				launch(i)
			}
		}
		launch(to)
		if next > r.pace.raNext.Load() {
			r.pace.raNext.Store(next)
		}
	}
	s.mu.Unlock()
	for _, f := range toStart {
		s.start(f)
	}
}

// speculate starts a network stream at block 0 for a read of it, if the
// blob is streamable (not Ranged) and block 0 is missing everywhere.
func (s *scheduler) speculate(r *Reader) {
	if !r.b.stream || s.opts.Readahead <= 0 || r.b.nblocks < 2 {
		return
	}
	g := readerOpts(r)
	g.peek = false
	var f *flight
	s.mu.Lock()
	if !s.closed && r.pace.stream.Load() == nil && s.sourceLocked(r, 0, nil) == fromNetStream {
		f = s.newStreamLocked(r, 0, &g, false)
	}
	s.mu.Unlock()
	if f != nil {
		s.start(f)
	}
}

// newStreamLocked makes r's stream of blocks from i on, from the Source
// or (fromDisk) the disk tier, registers its first block (missing: the
// caller checked) and those r's window reaches; the caller starts it with
// s.start(f) after unlocking. A reader has at most one stream, beside the
// MaxParallel fetches its slots bound: a stream must not wait behind the
// small fetches it replaces.
//
// A network stream's span ends before the first block known to be present
// (its request then asks for no byte it would skip); a disk stream's is the
// run the disk tier's index knows and nobody holds.
func (s *scheduler) newStreamLocked(r *Reader, i int64, g *getOpts, fromDisk bool) *flight {
	n := 1
	for last := min(r.b.nblocks, i+maxStreamBlocks); i+int64(n) < last; n++ {
		j := i + int64(n)
		if fromDisk && (s.flights.held(r.b, r.priv, j) || !s.store.has(r.b, j, tierDiskIndex)) ||
			!fromDisk && s.flights.present(r.b, r.priv, j, tierDiskIndex) {
			break
		}
	}
	ctx, cancel := context.WithCancel(r.ctx)
	f := &flight{
		s:         s,
		b:         r.b,
		first:     i,
		n:         n,
		keep:      g.keep,
		parent:    ctx,
		owner:     g.owner,
		readahead: true,
		blocks:    make([][]byte, n),
		progress:  make(chan struct{}),
	}
	f.stream = &stream{
		f:        f,
		s:        s,
		pace:     &r.pace,
		priv:     r.priv,
		kick:     make(chan struct{}, 1),
		cancel:   cancel,
		consumed: make([]int64, n),
		waiters:  make([]int32, n),
		dropped:  make([]bool, n),
		fromDisk: fromDisk,
	}
	if g.keep {
		// A SkipMemory owner keeps blocks in its private map, out of the
		// buffers' reference counts: those get plain memory.
		f.bufs = make([]*buf, n)
	}
	s.flights.set(r.b, i, f)
	f.stream.claimed = 1
	f.stream.extendLocked()
	s.wg.Add(1)
	r.pace.stream.Store(f)
	return f
}

// readExact reads exactly [off, off+len(p)) of r's blob (len(p) > 0, not
// past the end) with one ranged read when some block of it is not known to
// storage; else, or for a WholeBlocks reader, it reports done=false and the
// caller reads through read. The blocks lying wholly inside the range are
// stored as any fetched block; the partial ones at its ends are not.
func (s *scheduler) readExact(ctx context.Context, r *Reader, p []byte, off int64) (done bool, err error) {
	b := r.b
	end := off + int64(len(p))
	first, last := off/s.bs, (end-1)/s.bs
	if r.whole || s.allKnown(r, first, last) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.FetchTimeout)
	defer cancel()
	if err := readRange(ctx, s.st, b, p, off, false); err != nil {
		return true, fmt.Errorf("layercache: fetch %s bytes %d-%d: %w", b.key, off, end, err)
	}
	if err := s.keepWhole(r, p, off); err != nil {
		return true, fmt.Errorf("layercache: fetch %s bytes %d-%d: %w", b.key, off, end, err)
	}
	return true, nil
}

// allKnown reports whether blocks [first, last] of r's blob are all in
// memory, with r, being fetched, or known to the disk tier.
func (s *scheduler) allKnown(r *Reader, first, last int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := first; i <= last; i++ {
		if !s.flights.present(r.b, r.priv, i, tierDiskIndex) {
			return false
		}
	}
	return true
}

// keepWhole stores the blocks lying wholly inside data, r's blob's bytes at
// off, that are not stored yet. It fails, keeping nothing more, when one
// differs from the block digest known for it.
func (s *scheduler) keepWhole(r *Reader, data []byte, off int64) error {
	b := r.b
	end := off + int64(len(data))
	for i := (off + s.bs - 1) / s.bs; i*s.bs < end; i++ {
		lo := i * s.bs
		hi := lo + b.blockLen(i)
		if hi > end {
			break
		}
		s.mu.Lock()
		known := s.closed || s.flights.present(r.b, r.priv, i, tierDiskIndex)
		s.mu.Unlock()
		if known {
			continue
		}
		blk := make([]byte, hi-lo)
		copy(blk, data[lo-off:hi-off])
		if err := s.store.vet(b, i, blk); err != nil {
			return err
		}
		if r.priv != nil {
			r.priv.add(i, blk)
		} else {
			s.store.add(b, i, blk)
		}
		s.store.save(b, i, blk)
	}
	return nil
}
