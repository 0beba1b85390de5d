package layercache

import "sync/atomic"

// minSequentialRun is how many contiguous bytes (or one block, if smaller)
// a run of reads covers before it counts as sequential and reads ahead:
// two FUSE requests of a read(2) from the start of a file reach it.
const minSequentialRun = 128 << 10

// minSpeculativeRead is the smallest read of a blob's first block that
// starts a stream at once (see track), or a whole block if smaller.
const minSpeculativeRead = 64 << 10

// pacer is one Reader's sequential-read detector and readahead policy. It
// is lock-free: concurrent reads of one Reader may race on it, which only
// blurs the heuristic.
type pacer struct {
	limit    int64 // Options.Readahead; ≤ 0 disables readahead
	bs       int64
	maxFetch int64
	nblocks  int64
	seq      bool // OpenOptions.Sequential

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
	stream    atomic.Pointer[flight] // the reader's running stream, if any
}

// pacePlan is what one read asks of scheduling besides its own blocks.
type pacePlan struct {
	tracked bool // readahead is on: the read was tracked
	// ra: read ahead blocks [raFrom, raTo] in runs of raPiece blocks.
	ra                    bool
	raFrom, raTo, raPiece int64
	speculate             bool // the read starts a run at block 0: a stream may serve it
}

// init sets up p, part of its Reader, for a blob of nblocks blocks.
func (p *pacer) init(opts Options, nblocks int64, seq bool) {
	p.limit, p.bs, p.maxFetch, p.nblocks, p.seq = int64(opts.Readahead), opts.BlockSize, int64(opts.MaxFetchBlocks), nblocks, seq
	p.runEnd.Store(-1)
	p.lastBlock.Store(-1)
}

// track updates the detector with a read of [off, end) (blocks
// [first, last]) and returns its plan.
func (p *pacer) track(off, end, first, last int64) pacePlan {
	plan := p.detect(off, end, first, last)
	p.lastBlock.Store(last)
	p.lastFirst.Store(first)
	if last > p.front.Load() {
		p.front.Store(last)
	}
	return plan
}

// detect decides whether a read continues a sequential run and what to
// read ahead.
//
// A read is sequential when it starts near where the run so far ends:
// within a tolerance, because the kernel sends a sequential read(2) through
// FUSE as several concurrent requests that may arrive out of order. The
// window starts at 4 blocks on the first continuation and doubles with
// every read that extends the run, up to Options.Readahead; a jump resets
// it to 0, so random reads fetch only their own blocks. Readahead is
// topped up on every read: the next piece is launched as soon as a whole
// piece fits in the window ahead of the reader.
func (p *pacer) detect(off, end, first, last int64) (plan pacePlan) {
	if p.limit <= 0 {
		return plan
	}
	plan.tracked = true
	bs := p.bs
	prev := p.runEnd.Load()
	w := p.window.Load()
	// The kernel's own readahead sends requests up to its window ahead of
	// the application, in parallel: allow for as much as ours.
	tol := max(2*bs, 4*(end-off), w*bs)
	switch {
	case prev >= 0 && off >= min(prev, p.runStart.Load())-tol && off <= prev+tol:
		// Anywhere in the run so far counts: a request can be overtaken
		// by many later ones, and a re-read keeps the window. Beyond the
		// end, the run goes on, and grows the window once it is long
		// enough to tell from a few nearby small reads.
		if end > prev {
			p.runEnd.Store(end)
			switch {
			case p.seq:
				w = p.limit
			case end-p.runStart.Load() < min(bs, minSequentialRun):
			case w == 0:
				w = min(4, p.limit)
			default:
				w = min(2*w, p.limit)
			}
		}
	default:
		// The first read, or a jump: random access does not read ahead
		// (unless the reader declared itself sequential). The stream goes
		// first: once front moves, a stream still running would claim
		// blocks up to the new window.
		if f := p.stream.Swap(nil); f != nil {
			f.stream.cancel() // its blocks would be wasted now
		}
		p.runStart.Store(off)
		p.runEnd.Store(end)
		p.raNext.Store(0)
		p.front.Store(last)
		w = 0
		if p.seq {
			w = p.limit
		}
		// A large read of the first block (the kernel's first READ of a
		// file) opens a stream right away; small reads at the start
		// (format probes, headers) do not, as the server may send up to
		// a socket buffer's worth before the stream ends.
		plan.speculate = first == 0 && end-off >= min(minSpeculativeRead, bs)
	}
	p.window.Store(w)
	if w == 0 {
		return plan
	}
	from := max(p.raNext.Load(), last+1)
	to := min(last+w, p.nblocks-1)
	piece := max(1, min(w/2, p.maxFetch))
	if from > to || (to-from+1 < piece && to < p.nblocks-1) {
		// Nothing left to read ahead, or wait until a whole piece fits:
		// fewer, larger requests.
		return plan
	}
	plan.ra, plan.raFrom, plan.raTo, plan.raPiece = true, from, to, piece
	return plan
}
