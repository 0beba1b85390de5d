package layerindex

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// A gzip layer's index pass publishes its output to a bounded ring that
// TarReaders open meanwhile read from, so the stream is decoded and the
// blob read once (docs/design/layerindex.md tells how). Memory: one ring
// per layer whose pass runs while a TarReader is open on it.

// Variables so tests can make them small.
var (
	// shareRing is how much of the pass's latest output is kept for
	// readers. The pass keeps its second half for bytes before the
	// furthest a reader has read: the kernel's readahead sends READs of a
	// sequential reader out of order, several MiB apart.
	shareRing = 16 << 20
	// shareStall is how long the pass waits for an attached reader that
	// makes no progress before leaving it behind.
	shareStall = 500 * time.Millisecond
)

// shareCounts count, process-wide, what the shares did (benchmarks
// report them).
var shareCounts struct {
	served    atomic.Int64 // bytes readers copied from rings
	fallbacks atomic.Int64 // reads a share could not serve (behind its ring, pass failed)
	dropped   atomic.Int64 // readers the pass left behind
	passWait  atomic.Int64 // nanoseconds passes waited for readers
}

// passSharing is a layer's link between its gzip index pass and its
// TarReaders: the share the pass publishes to, and how many TarReaders are
// open (a ring is kept only while one is).
type passSharing struct {
	cur        atomic.Pointer[passShare]
	tarReaders atomic.Int32
}

// passShare is the output of one running (or just finished) gzip index
// pass. Lock order: a cursor's mu, then passShare.mu.
type passShare struct {
	mu      sync.Mutex
	ring    []byte               // nil until a TarReader is open on the layer
	base    int64                // stream offset of the first byte published to the ring
	end     int64                // stream offset after the last byte published
	started bool                 // a pass publishes to it
	build   *build               // the pass a reader waits for (set by shareFor)
	done    bool                 // the pass ended
	ok      bool                 // ... having decoded the whole stream: end is its size
	readers map[*TarReader]int64 // attached readers: the furthest each has read or waits for
	cps     []checkpoint         // the pass's checkpoints so far (never modified, only appended)
	// moved is closed (and replaced) when end, done or a reader's position
	// changes while someone waits on it.
	moved   chan struct{}
	waiting bool
	// awaitFirst: the pass made the ring for an open TarReader that has
	// not read yet, and waits for its first read before overwriting the
	// stream's start (up to shareStall).
	awaitFirst bool
	held       chan struct{} // closed when the pass starts waiting for the first read
	heldClosed bool
}

func newPassShare() *passShare {
	return &passShare{readers: map[*TarReader]int64{}, moved: make(chan struct{}), held: make(chan struct{})}
}

// start is the stream offset of the oldest byte the ring still holds.
func (s *passShare) start() int64 { return max(s.base, s.end-int64(len(s.ring))) }

func (s *passShare) wakeLocked() {
	if s.waiting {
		close(s.moved)
		s.moved = make(chan struct{})
		s.waiting = false
	}
}

// waitLocked waits until someone calls wakeLocked, d passes or ctx ends;
// it reports whether it was woken. Called and returns with s.mu held.
func (s *passShare) waitLocked(ctx context.Context, d time.Duration) bool {
	return s.waitOrLocked(ctx, d, nil)
}

// waitOrLocked is waitLocked that also returns (true) when also is closed.
func (s *passShare) waitOrLocked(ctx context.Context, d time.Duration, also <-chan struct{}) bool {
	ch := s.moved
	s.waiting = true
	s.mu.Unlock()
	defer s.mu.Lock()
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
		return true
	case <-also:
		return true
	case <-timeout:
	case <-ctx.Done():
	}
	return false
}

// teeShare wraps the pass's decoder: every byte read through it is
// published to l's share.
type teeShare struct {
	ctx context.Context
	r   io.Reader
	ps  *passSharing
	s   *passShare
}

func (t *teeShare) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.s.publish(t.ctx, t.ps, p[:n])
	}
	return n, err
}

// start returns the share a gzip pass that is starting publishes to: the
// one a TarReader made for it (Layer.shareFor), else a new one.
func (ps *passSharing) start() *passShare {
	for {
		old := ps.cur.Load()
		if old != nil {
			old.mu.Lock()
			fresh := !old.done && !old.started
			old.started = true
			old.mu.Unlock()
			if fresh {
				return old
			}
		}
		s := newPassShare()
		s.started = true
		if ps.cur.CompareAndSwap(old, s) {
			return s
		}
	}
}

// publish appends p to the ring. The ring exists only once a TarReader is
// open on the layer: a pass nobody streams along with costs no memory.
func (s *passShare) publish(ctx context.Context, ps *passSharing, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		if ps.tarReaders.Load() == 0 {
			s.end += int64(len(p))
			return
		}
		s.ring, s.base = make([]byte, shareRing), s.end
		// A TarReader is open but has not read yet (fs opens it, then
		// reads): keep the stream's start for it a while.
		s.awaitFirst = s.end == 0 && len(s.readers) == 0
	}
	for len(p) > 0 {
		k := min(len(p), len(s.ring)/4)
		s.waitForReadersLocked(ctx, s.end+int64(k)-int64(len(s.ring)))
		at := int(s.end % int64(len(s.ring)))
		c := copy(s.ring[at:], p[:k])
		copy(s.ring, p[c:k])
		s.end += int64(k)
		p = p[k:]
		s.wakeLocked()
	}
}

// waitForReadersLocked lets attached readers that still need bytes before
// need read them; a reader that makes no progress for shareStall (or a
// cancelled pass) is left behind.
func (s *passShare) waitForReadersLocked(ctx context.Context, need int64) {
	if s.awaitFirst && need > 0 {
		if len(s.readers) == 0 {
			if !s.heldClosed {
				close(s.held)
				s.heldClosed = true
			}
			s.waitLocked(ctx, shareStall)
		}
		s.awaitFirst = false
	}
	for {
		slow := false
		keep := int64(len(s.ring) / 2)
		for _, pos := range s.readers {
			if pos-keep < need {
				slow = true
				break
			}
		}
		if !slow {
			return
		}
		t := time.Now()
		woken := s.waitLocked(ctx, shareStall)
		shareCounts.passWait.Add(int64(time.Since(t)))
		if woken {
			continue
		}
		for r, pos := range s.readers {
			if pos-keep < need {
				shareCounts.dropped.Add(1)
				delete(s.readers, r)
			}
		}
		return
	}
}

// checkpointed records the pass's checkpoints so far, for readers that
// fall behind the ring.
func (s *passShare) checkpointed(cps []checkpoint) {
	s.mu.Lock()
	s.cps = cps
	s.mu.Unlock()
}

// finish ends the pass that published to s: ok if it decoded the whole
// stream. Readers waiting beyond its end are woken (to io.EOF, or to
// decode for themselves).
func (ps *passSharing) finish(s *passShare, ok bool) {
	s.mu.Lock()
	s.done, s.ok = true, ok
	s.wakeLocked()
	s.dropIfUnusedLocked(ps)
	s.mu.Unlock()
}

// dropIfUnusedLocked forgets a finished share no reader is attached to,
// unless a TarReader is open (fs opens, then reads) and the ring still
// holds the whole stream.
func (s *passShare) dropIfUnusedLocked(ps *passSharing) {
	if s.done && len(s.readers) == 0 && (ps.tarReaders.Load() == 0 || s.start() > 0) {
		ps.cur.CompareAndSwap(s, nil)
	}
}

// read copies into p the bytes at off that the layer's index pass published,
// waiting for the pass if off is ahead of it. ok is false if the share
// can't serve off (no pass, no ring, off already overwritten, the pass
// failed): r then decodes for itself. io.EOF at the end of the stream.
func (ps *passSharing) read(ctx context.Context, r *TarReader, p []byte, off int64) (n int, err error, ok bool) {
	s := ps.cur.Load()
	if s == nil || len(p) == 0 {
		return 0, nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.ring == nil && !s.done && off >= s.end {
			// The first reader: from here on the pass keeps its output.
			s.ring, s.base = make([]byte, shareRing), s.end
		}
		if s.ring == nil || off < s.start() {
			break
		}
		if off < s.end {
			k := int(min(int64(len(p)), s.end-off))
			at := int(off % int64(len(s.ring)))
			c := copy(p[:k], s.ring[at:])
			copy(p[c:k], s.ring)
			s.readers[r] = max(s.readers[r], off+int64(k))
			s.wakeLocked()
			shareCounts.served.Add(int64(k))
			return k, nil, true
		}
		if s.done {
			if s.ok && off >= s.end {
				delete(s.readers, r)
				s.dropIfUnusedLocked(ps)
				return 0, io.EOF, true
			}
			break
		}
		// Ahead of the pass: nothing decodes there sooner than it will.
		s.readers[r] = max(s.readers[r], off)
		s.wakeLocked()
		var passEnded <-chan struct{}
		if s.build != nil {
			passEnded = s.build.done
		}
		if !s.waitOrLocked(ctx, 0, passEnded) && ctx.Err() != nil {
			return 0, fmt.Errorf("layer %s: wait for the index pass at %d: %w", r.l.key, off, ctx.Err()), true
		}
		if !s.done && s.build != nil && isClosed(s.build.done) {
			// The pass ended without publishing here (it found a
			// persisted index, or failed before decoding).
			break
		}
	}
	shareCounts.fallbacks.Add(1)
	if s.done || s.readers[r] < s.start() {
		// Nothing more to come, or r is wholly behind: it decodes on its own.
		delete(s.readers, r)
		s.wakeLocked()
		s.dropIfUnusedLocked(ps)
	}
	// Else one straggling READ (the kernel's readahead is out of order)
	// decodes from a checkpoint; r stays attached for its next reads.
	return 0, nil, false
}

// detach forgets reader r (closed).
func (ps *passSharing) detach(r *TarReader) {
	s := ps.cur.Load()
	if s == nil {
		return
	}
	s.mu.Lock()
	if _, ok := s.readers[r]; ok {
		delete(s.readers, r)
		s.wakeLocked()
	}
	s.dropIfUnusedLocked(ps)
	s.mu.Unlock()
}

// partialIndex is the restart points of the running pass, for a reader
// that fell behind its ring; nil if there are none.
func (ps *passSharing) partialIndex() *layerIndex {
	s := ps.cur.Load()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	cps := s.cps
	s.mu.Unlock()
	if len(cps) == 0 {
		return nil
	}
	return &layerIndex{Format: FormatGzip, Checkpoints: cps}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
