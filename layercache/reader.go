package layercache

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/regfs/regfs/blobio"
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

// Reader reads one blob through the cache. It is a blobio.ReaderAt, safe
// for concurrent use. Close it when done: that stops its readahead.
type Reader struct {
	s      *scheduler
	store  *store
	b      *blob
	whole  bool            // WholeBlocks
	ctx    context.Context // parent of this Reader's readahead fetches
	cancel context.CancelFunc
	sem    chan struct{} // fetch slots: Options.MaxParallel
	closed atomic.Bool
	pace   pacer
	priv   *privateBlocks // SkipMemory (or no memory tier); nil otherwise
	cache  *Cache         // for the strict-mode verification pass
	pass   bool           // this Reader is that pass: it never waits for it
}

var _ blobio.ReaderAt = (*Reader)(nil)

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
	r.priv.close()
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

// ReadExact is ReadAt for small reads far apart (a format probe, an eStargz
// footer, its TOC, one small file's chunk): when some block of
// [off, off+len(p)) is not cached, it fetches exactly those bytes with one
// ranged request instead of every block they touch. The blocks lying wholly
// inside the range are cached as any fetched block (memory unless the
// Reader skips it, disk); the partial ones at its ends are not. When every
// block is cached, or the Reader was opened with WholeBlocks, it is an
// ordinary ReadAt. It is not single-flighted: concurrent ReadExact calls of
// one range each fetch it.
func (r *Reader) ReadExact(ctx context.Context, p []byte, off int64) (int, error) {
	n, eof, err := r.check(off, len(p))
	if err != nil || n == 0 {
		return 0, err
	}
	if r.strict() {
		// Only whole blocks can be checked against their digests.
		return r.ReadAt(ctx, p, off)
	}
	done, err := r.s.readExact(ctx, r, p[:n], off)
	switch {
	case !done:
		return r.ReadAt(ctx, p, off)
	case err != nil:
		return 0, err
	}
	r.store.countServed(r.b, off/r.b.bs, n)
	if eof {
		return n, io.EOF
	}
	return n, nil
}

// check validates a read of n bytes at off and returns how many of them
// the blob has (0 with io.EOF at or past its end), and whether that cut
// them short.
func (r *Reader) check(off int64, n int) (int, bool, error) {
	size := r.b.size
	switch {
	case r.closed.Load():
		return 0, false, ErrClosed
	case size < 0:
		return 0, false, fmt.Errorf("layercache: read %s: unknown blob size %d", r.b.key, size)
	case off < 0:
		return 0, false, fmt.Errorf("layercache: read %s at negative offset %d", r.b.key, off)
	case n < 0:
		return 0, false, fmt.Errorf("layercache: read %s: negative length %d", r.b.key, n)
	case r.b.trust.err() != nil:
		return 0, false, r.b.trust.err()
	case off >= size:
		return 0, false, io.EOF
	}
	if int64(n) > size-off {
		return int(size - off), true, nil
	}
	return n, false, nil
}

// slices appends to vec the slices of [off, off+n), and to held the
// recycled buffers they point into, which the caller releases.
func (r *Reader) slices(ctx context.Context, vec [][]byte, held []*buf, off int64, n int) ([][]byte, []*buf, error) {
	n, eof, err := r.check(off, n)
	if err != nil || n == 0 {
		return nil, held, err
	}
	if err := r.awaitVerified(ctx); err != nil {
		return nil, held, err
	}
	bs := r.b.bs
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
	plan := r.pace.track(off, end, first, last)
	held, err = r.s.readBlocks(ctx, r, first, out, held, off, end, plan)
	if err == nil {
		// Before serving: the read that completes a pass fails on a mismatch.
		err = r.store.feed(r.b, first, out)
	}
	if err != nil {
		return nil, held, err
	}
	for j, d := range out {
		start := first + int64(j)
		lo := max(off-start*bs, 0)
		hi := min(end-start*bs, int64(len(d)))
		vec = append(vec, d[lo:hi:hi])
	}
	r.store.countServed(r.b, first, n)
	if eof {
		return vec, held, io.EOF
	}
	return vec, held, nil
}
