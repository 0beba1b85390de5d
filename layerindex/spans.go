package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Decoded spans: a bounded LRU of the tar stream in aligned spans, for
// blobs a read can't restart near (a zstd blob in one long frame). Only
// spans a read touched are kept, and only where the restart point lies
// more than 1.5 Options.Spacing back.

// spanSize is the unit of the span cache.
const spanSize = 256 << 10

type spanKey struct {
	key string
	off int64 // aligned to spanSize
}

// span is decoded bytes [off, off+len(data)); last marks the stream's end.
// The data is never written after it is stored.
type span struct {
	data []byte
	last bool
}

func alignDown(off int64) int64 { return off - off%spanSize }

// worthCaching reports whether decoding to off again would cost clearly
// more than a checkpoint spacing (gzip checkpoints lie up to a deflate
// block more than a spacing apart: those spans are not kept).
func (l *Layer) worthCaching(off int64, idx *layerIndex) bool {
	return l.m.spans != nil && off-l.decoderFor(idx).restartPoint(off) > l.m.opts.Spacing+l.m.opts.Spacing/2
}

// spanCache is the Manager's decoded spans, across its layers.
type spanCache struct {
	lru *lru.Cache[spanKey, span]
}

func newSpanCache(bytes int64) (*spanCache, error) {
	n := bytes / spanSize
	if n <= 0 {
		return nil, nil
	}
	c, err := lru.New[spanKey, span](int(n))
	if err != nil {
		return nil, fmt.Errorf("span cache: %w", err)
	}
	return &spanCache{c}, nil
}

// Len is the number of spans held.
func (c *spanCache) Len() int { return c.lru.Len() }

func (c *spanCache) contains(key string, off int64) bool { return c.lru.Contains(spanKey{key, off}) }

// read copies into p what the cache holds of key's stream from off. It
// returns io.EOF when off is at or past the end of the stream the cache
// knows of, errNoSpan when it holds nothing there.
func (c *spanCache) read(key string, p []byte, off int64) (int, error) {
	start := alignDown(off)
	s, ok := c.lru.Get(spanKey{key, start})
	if !ok {
		return 0, errNoSpan
	}
	if in := off - start; in < int64(len(s.data)) {
		return copy(p, s.data[in:]), nil
	}
	if s.last {
		return 0, io.EOF
	}
	return 0, errNoSpan // a short span that is not the last: never stored, but be safe
}

var errNoSpan = errors.New("span not cached")

// add keeps data, the decoded bytes of key's stream at aligned off; the
// cache owns data from here on.
func (c *spanCache) add(key string, off int64, data []byte, last bool) {
	c.lru.Add(spanKey{key, off}, span{data: data, last: last})
}

// cachedSpan is the span cache's read for l: errNoSpan if there is none.
func (l *Layer) cachedSpan(p []byte, off int64) (int, error) {
	if l.m.spans == nil {
		return 0, errNoSpan
	}
	return l.m.spans.read(l.key, p, off)
}

// keepSpans stores the spans a read of [from, to) touched, decoding on to
// the end of the last one if needed (a quarter MiB at most, which readahead
// would ask for next anyway). Only spans that were read are kept: the ones
// a decode merely passed through on its way would push the useful ones out.
// Failing to decode further only means the span is not kept.
func (c *cursor) keepSpans(ctx context.Context, from, to int64, idx *layerIndex) {
	if c.l.m.spans == nil || c.streaming {
		return
	}
	for s := alignDown(from); s < to; s += spanSize {
		if !c.l.worthCaching(s, idx) || s < c.winOff || c.l.m.spans.contains(c.l.key, s) {
			continue
		}
		for c.end() < s+spanSize && !c.eof && c.s != nil {
			if c.advance(ctx) != nil {
				return
			}
		}
		e := min(s+spanSize, c.end())
		if s < c.winOff || e <= s || e < s+spanSize && !c.eof {
			continue
		}
		if !c.l.m.spans.contains(c.l.key, s) {
			c.l.m.spans.add(c.l.key, s, append([]byte(nil), c.win[s-c.winOff:e-c.winOff]...), c.eof && e == c.end())
		}
	}
}

// spanTee stores the spans of the first limit bytes of a sequential pass
// (the index pass) as they go by: a layer smaller than the cache is then
// read without decoding again, a larger one fills at most the limit.
type spanTee struct {
	r     io.Reader
	l     *Layer
	idx   *layerIndex // the index being built: its frames so far
	buf   []byte
	off   int64 // stream offset of buf[0]
	limit int64
}

func (t *spanTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if t.off < t.limit {
		for q := p[:n]; len(q) > 0; {
			if t.buf == nil {
				t.buf = make([]byte, 0, spanSize)
			}
			k := copy(t.buf[len(t.buf):cap(t.buf)], q)
			t.buf, q = t.buf[:len(t.buf)+k], q[k:]
			if len(t.buf) == spanSize {
				t.flush(false)
			}
		}
		if errors.Is(err, io.EOF) && len(t.buf) > 0 {
			t.flush(true)
		}
	}
	return n, err
}

func (t *spanTee) flush(last bool) {
	if t.l.worthCaching(t.off, t.idx) {
		t.l.m.spans.add(t.l.key, t.off, t.buf, last)
		t.buf = nil // stored: the next span gets a buffer of its own
	} else {
		t.buf = t.buf[:0]
	}
	t.off += spanSize
}
