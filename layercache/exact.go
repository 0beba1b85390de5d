package layercache

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ReadExact is ReadAt for small reads far apart (a format probe, an eStargz
// footer, its TOC, one small file's chunk): when some block of
// [off, off+len(p)) is not cached, it fetches exactly those bytes with one
// ranged request instead of every block they touch, which for a 4 KiB
// chunk would be a whole block (1 MiB by default) nobody else reads. The
// blocks lying wholly inside the range are cached as any fetched block
// (memory unless the Reader skips it, disk); the partial ones at its ends
// are not. When every block is cached, or the Reader was opened with
// WholeBlocks, it is an ordinary ReadAt.
//
// It is not single-flighted: concurrent ReadExact calls of one range each
// fetch it. Callers keep what they read (the eStargz TOC and chunks are
// kept by the layer index).
func (r *Reader) ReadExact(ctx context.Context, p []byte, off int64) (int, error) {
	c := r.c
	size := r.b.size
	switch {
	case r.closed.Load():
		return 0, ErrClosed
	case size < 0:
		return 0, fmt.Errorf("layercache: read %s: unknown blob size %d", r.b.key, size)
	case off < 0:
		return 0, fmt.Errorf("layercache: read %s at negative offset %d", r.b.key, off)
	case off >= size:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	n := len(p)
	eof := false
	if int64(n) > size-off {
		n, eof = int(size-off), true
	}
	end := off + int64(n)
	first, last := off/c.bs, (end-1)/c.bs
	if r.whole || r.allKnown(first, last) {
		return r.ReadAt(ctx, p, off)
	}

	ctx, cancel := context.WithTimeout(ctx, c.opts.FetchTimeout)
	defer cancel()
	c.st.sourceRequests.Add(1)
	c.st.inFlight.Add(1)
	got, err := r.b.src.ReadAt(ctx, p[:n], off)
	c.st.inFlight.Add(-1)
	if got > 0 {
		c.st.bytesFetched.Add(int64(min(got, n)))
	}
	if got == n && errors.Is(err, io.EOF) {
		err = nil // io.ReaderAt may report EOF with a full read of the tail
	}
	if got != n && (err == nil || errors.Is(err, io.EOF)) {
		err = fmt.Errorf("got %d of %d bytes: %w: %w", got, n, ErrShortRead, io.ErrUnexpectedEOF)
	}
	if err != nil {
		c.st.sourceErrors.Add(1)
		return 0, fmt.Errorf("layercache: fetch %s bytes %d-%d: %w", r.b.key, off, end, err)
	}
	r.keepWhole(p[:n], off)
	c.addServed(blockKey{r.b.id, first}, n)
	if eof {
		return n, io.EOF
	}
	return n, nil
}

// allKnown reports whether blocks [first, last] are all in memory, with
// this Reader, being fetched, or known to the disk tier.
func (r *Reader) allKnown(first, last int64) bool {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := first; i <= last; i++ {
		if !c.knownLocked(r, i) {
			return false
		}
	}
	return true
}

// keepWhole caches the blocks lying wholly inside data, the blob's bytes
// at off, that are not cached yet.
func (r *Reader) keepWhole(data []byte, off int64) {
	c := r.c
	end := off + int64(len(data))
	for i := (off + c.bs - 1) / c.bs; i*c.bs < end; i++ {
		lo := i * c.bs
		hi := lo + c.blockLen(r.b, i)
		if hi > end {
			break
		}
		k := blockKey{r.b.id, i}
		c.mu.Lock()
		known := c.closed || c.knownLocked(r, i)
		c.mu.Unlock()
		if known {
			continue
		}
		blk := make([]byte, hi-lo)
		copy(blk, data[lo-off:hi-off])
		if r.skip {
			r.stashOne(i, blk)
		} else {
			c.memAdd(k, blk)
		}
		if c.disk != nil {
			c.disk.writeBlock(r.b.key, c.bs, i, blk)
		}
	}
}
