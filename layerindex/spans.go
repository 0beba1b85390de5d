package layerindex

import (
	"context"
	"errors"
	"io"
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

// cachedSpan copies into p what the span cache holds from off. It returns
// io.EOF when off is at or past the end of the stream the cache knows of.
func (l *Layer) cachedSpan(p []byte, off int64) (int, error) {
	if l.m.spans == nil {
		return 0, errNoSpan
	}
	start := alignDown(off)
	s, ok := l.m.spans.Get(spanKey{l.key, start})
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

// storeSpan keeps a copy of data, the decoded bytes at aligned off.
func (l *Layer) storeSpan(off int64, data []byte, last bool) {
	k := spanKey{l.key, off}
	if l.m.spans.Contains(k) {
		return
	}
	l.m.spans.Add(k, span{data: append([]byte(nil), data...), last: last})
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
		if !c.l.worthCaching(s, idx) || s < c.winOff || c.l.m.spans.Contains(spanKey{c.l.key, s}) {
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
		c.l.storeSpan(s, c.win[s-c.winOff:e-c.winOff], c.eof && e == c.end())
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
		t.l.m.spans.Add(spanKey{t.l.key, t.off}, span{data: t.buf, last: last})
		t.buf = nil // stored: the next span gets a buffer of its own
	} else {
		t.buf = t.buf[:0]
	}
	t.off += spanSize
}
