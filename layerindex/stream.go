package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// stream decodes the tar stream sequentially from pos(). It is used by one
// goroutine at a time; read returns io.EOF at the end of the tar stream.
type stream interface {
	read(ctx context.Context, p []byte) (int, error)
	pos() int64
	close()
}

// readerStream adapts a decoder over a blobReader to stream.
type readerStream struct {
	br      *blobReader
	r       io.Reader
	upos    int64
	closeFn func()
}

func (s *readerStream) read(ctx context.Context, p []byte) (int, error) {
	s.br.ctx = ctx
	n, err := s.r.Read(p)
	s.upos += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("decode at uncompressed offset %d (blob offset %d): %w", s.upos, s.br.offset(), err)
	}
	return n, err
}

func (s *readerStream) pos() int64 { return s.upos }

func (s *readerStream) close() {
	if s.closeFn != nil {
		s.closeFn()
		s.closeFn = nil
	}
}

// openStream returns a stream positioned at or before off: at the nearest
// checkpoint (gzip) or frame (zstd) of idx if there is one, else at 0.
func (l *Layer) openStream(ctx context.Context, off int64, idx *layerIndex) (stream, error) {
	f, err := l.Format(ctx)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatTar:
		br := newBlobReader(ctx, l.blob, off, l.m.opts.ReadSize)
		return &readerStream{br: br, r: br, upos: off}, nil
	case FormatGzip:
		if idx != nil {
			if cp, ok := idx.checkpointFor(off); ok {
				br := newBlobReader(ctx, l.blob, cp.CBit/8, l.m.opts.ReadSize)
				inf, err := resumeInflater(br, cp.CBit, cp.UOff, cp.Window)
				if err != nil {
					return nil, fmt.Errorf("layer %s: resume gzip at %d: %w", l.key, cp.UOff, err)
				}
				return &readerStream{br: br, r: readerFunc(inf.read), upos: cp.UOff}, nil
			}
		}
		return l.openGzipStart(ctx)
	case FormatZstd:
		var fr zstdFrame
		if idx != nil {
			fr = idx.frameFor(off)
		}
		return l.openZstd(ctx, fr)
	}
	return nil, fmt.Errorf("layer %s: unknown format %v", l.key, f)
}

// restartPoint is where openStream(off, idx) would start decoding.
func (l *Layer) restartPoint(off int64, idx *layerIndex) int64 {
	if idx == nil {
		return 0
	}
	switch l.format {
	case FormatGzip:
		cp, _ := idx.checkpointFor(off)
		return cp.UOff
	case FormatZstd:
		return idx.frameFor(off).UOff
	}
	return off
}

func (l *Layer) openGzipStart(ctx context.Context) (stream, error) {
	br := newBlobReader(ctx, l.blob, 0, l.m.opts.ReadSize)
	// klauspost's inflater is about twice as fast as ours on a plain
	// sequential pass; ours is used where checkpoints are needed.
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("layer %s: gzip header: %w", l.key, err)
	}
	return &readerStream{br: br, r: zr, closeFn: func() { zr.Close() }}, nil
}

func (l *Layer) openZstd(ctx context.Context, fr zstdFrame) (stream, error) {
	br := newBlobReader(ctx, l.blob, fr.COff, l.m.opts.ReadSize)
	// Concurrency 1 decodes synchronously, on the caller's goroutine, so the
	// blobReader's ctx is the caller's.
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		return nil, fmt.Errorf("layer %s: zstd: %w", l.key, err)
	}
	return &readerStream{br: br, r: zr, upos: fr.UOff, closeFn: zr.Close}, nil
}

// cursorWindow is how much decoded output a cursor keeps: the second half is
// the latest output, the first half lets slightly backward reads (the
// kernel's out-of-order readahead) be served without restarting.
const cursorWindow = 2 << 20

// cursor is a decoding position in the tar stream with a window of recent
// output.
type cursor struct {
	mu     sync.Mutex
	l      *Layer
	s      stream
	win    []byte // decoded bytes [winOff, winOff+len(win))
	winOff int64
	eof    bool // the stream ended at winOff+len(win)
	// streaming cursors (a TarReader) read the span cache but add nothing
	// to it: a pass over all of layer.tar would push out every span.
	streaming bool
}

func (c *cursor) end() int64 { return c.winOff + int64(len(c.win)) }

func (c *cursor) closeStream() {
	if c.s != nil {
		c.s.close()
		c.s = nil
	}
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
		if m, err := c.l.cachedSpan(p[n:], o); err == nil {
			n += m
			continue
		} else if errors.Is(err, io.EOF) {
			return n, io.EOF
		}
		if c.s == nil || o < c.winOff || c.l.restartPoint(o, idx) > c.end() {
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
	s, err := c.l.openStream(ctx, off, idx)
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

func (c *cursor) close() {
	c.mu.Lock()
	c.closeStream()
	c.win = nil
	c.mu.Unlock()
}

// maxSharedCursors bounds the cursors TarReadAt keeps for callers without a
// TarReader of their own.
const maxSharedCursors = 4

// TarReadAt reads the uncompressed tar stream at off. It fills p unless the
// stream ends first, then returns the bytes read and io.EOF. Callers that read
// one file sequentially should hold a TarReader instead, so their cursor is
// their own.
func (l *Layer) TarReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return l.tarReadAt(ctx, p, off, l.loadedIndex(ctx))
}

func (l *Layer) tarReadAt(ctx context.Context, p []byte, off int64, idx *layerIndex) (int, error) {
	f, err := l.Format(ctx)
	if err != nil {
		return 0, err
	}
	if f == FormatTar {
		return l.rawReadAt(ctx, p, off)
	}
	c := l.takeCursor(off)
	c.mu.Lock()
	n, err := c.readAt(ctx, p, off, idx)
	c.mu.Unlock()
	l.putCursor(c)
	return n, err
}

func (l *Layer) rawReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := l.blob.Size()
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", l.key, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n, err := l.blob.ReadAt(ctx, want, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("layer %s: read at %d: %w", l.key, off, err)
	}
	return n, err
}

// takeCursor removes from the pool the cursor best placed for off: one whose
// window holds off, else the one just before off, else a new one.
func (l *Layer) takeCursor(off int64) *cursor {
	l.mu.Lock()
	defer l.mu.Unlock()
	best := -1
	for i, c := range l.pool {
		if off >= c.winOff && off < c.end() {
			best = i
			break
		}
		if !c.eof && c.end() <= off && (best < 0 || c.end() > l.pool[best].end()) {
			best = i
		}
	}
	if best < 0 && len(l.pool) < maxSharedCursors {
		return &cursor{l: l}
	}
	if best < 0 {
		best = 0 // the least recently used; it will restart where needed
	}
	c := l.pool[best]
	l.pool = append(l.pool[:best], l.pool[best+1:]...)
	return c
}

func (l *Layer) putCursor(c *cursor) {
	l.mu.Lock()
	l.pool = append(l.pool, c)
	var drop *cursor
	if len(l.pool) > maxSharedCursors {
		drop = l.pool[0]
		l.pool = l.pool[1:]
	}
	l.mu.Unlock()
	if drop != nil {
		drop.close()
	}
}

// TarReader is one open reader of the uncompressed tar stream, with its own
// decoding cursor, so a sequential reader (tar -tf layer.tar) streams at full
// speed whatever else reads the layer. Close it when done.
type TarReader struct {
	l *Layer
	c *cursor
}

// NewTarReader opens a reader of the tar stream; it does no I/O.
func (l *Layer) NewTarReader() *TarReader {
	return &TarReader{l: l, c: &cursor{l: l, streaming: true}}
}

// ReadAt reads the tar stream at off, with TarReadAt's contract. Safe for
// concurrent use (calls are serialized).
func (r *TarReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	f, err := r.l.Format(ctx)
	if err != nil {
		return 0, err
	}
	if f == FormatTar {
		return r.l.rawReadAt(ctx, p, off)
	}
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.c.readAt(ctx, p, off, r.l.loadedIndex(ctx))
}

// Close frees the reader's decoder and window.
func (r *TarReader) Close() error {
	r.c.close()
	return nil
}
