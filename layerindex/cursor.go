package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// cursorWindow is how much decoded output a cursor keeps: the second half is
// the latest output, the first half lets slightly backward reads (the
// kernel's out-of-order readahead) be served without restarting.
const cursorWindow = 2 << 20

// cursor is a decoding position in the tar stream with a window of recent
// output.
type cursor struct {
	mu     sync.Mutex
	l      *Layer
	s      *stream
	win    []byte // decoded bytes [winOff, winOff+len(win))
	winOff int64
	eof    bool // the stream ended at winOff+len(win)
	// streaming cursors (a TarReader) read the span cache but add nothing
	// to it: a pass over all of layer.tar would push out every span.
	streaming bool
	owner     *TarReader // whose cursor this is; nil: shared by TarReadAt callers
	bufs      streamBufs
}

func (c *cursor) end() int64 { return c.winOff + int64(len(c.win)) }

func (c *cursor) closeStream() {
	c.s = nil
}

// readAt fills p from off; short only at the end of the stream, with io.EOF.
func (c *cursor) readAt(ctx context.Context, p []byte, off int64, idx *layerIndex) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", c.l.key, off)
	}
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= c.winOff && o < c.end() {
			k := copy(p[n:], c.win[o-c.winOff:])
			c.keepSpans(ctx, o, o+int64(k), idx)
			n += k
			continue
		}
		if c.eof && o >= c.end() || idx != nil && o >= idx.TarSize {
			return n, io.EOF
		}
		if c.owner != nil {
			m, err, ok := c.l.share.read(ctx, c.owner, p[n:], o)
			if ok {
				n += m
				if err != nil {
					return n, err
				}
				continue
			}
		}
		if m, err := c.l.cachedSpan(p[n:], o); err == nil {
			n += m
			continue
		} else if errors.Is(err, io.EOF) {
			return n, io.EOF
		}
		if c.s == nil || o < c.winOff || c.l.decoderFor(idx).restartPoint(o) > c.end() {
			if err := c.reopen(ctx, o, idx); err != nil {
				return n, err
			}
			continue
		}
		if err := c.advance(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *cursor) reopen(ctx context.Context, off int64, idx *layerIndex) error {
	c.closeStream()
	if idx == nil {
		// A pass still running has restart points already.
		idx = c.l.share.partialIndex()
	}
	s, err := c.l.decoderFor(idx).open(ctx, off, &c.bufs)
	if err != nil {
		return err
	}
	c.s, c.winOff, c.win, c.eof = s, s.pos(), c.win[:0], false
	return nil
}

// advance decodes more output into the window, sliding it when full.
func (c *cursor) advance(ctx context.Context) error {
	if c.win == nil {
		c.win = make([]byte, 0, cursorWindow)
	}
	if len(c.win) == cap(c.win) {
		half := len(c.win) / 2
		copy(c.win, c.win[half:])
		c.win = c.win[:len(c.win)-half]
		c.winOff += int64(half)
	}
	m, err := c.s.read(ctx, c.win[len(c.win):cap(c.win)])
	c.win = c.win[:len(c.win)+m]
	if errors.Is(err, io.EOF) {
		c.eof = true
		c.closeStream()
		return nil
	}
	if err != nil {
		// A decoder that failed can't go on; the next read starts afresh.
		c.closeStream()
		c.win, c.winOff = c.win[:0], 0
		return fmt.Errorf("layer %s: %w", c.l.key, err)
	}
	return nil
}

// retarget readies a cursor taken from the pool for l and owner,
// dropping its stream and output if they were another layer's.
func (c *cursor) retarget(l *Layer, owner *TarReader) {
	c.mu.Lock()
	if c.l != l {
		c.closeStream()
		c.l, c.win, c.winOff, c.eof = l, c.win[:0], 0, false
	}
	c.owner, c.streaming = owner, owner != nil
	c.mu.Unlock()
}

func (c *cursor) close() {
	c.mu.Lock()
	c.closeStream()
	c.win = nil
	c.bufs.free()
	c.mu.Unlock()
}
