package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sync"

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

// streamBufs are a cursor's decoder buffers, kept across the restarts of
// its stream: random reads restart often, and allocating a span buffer, a
// deflate window and a decoder each time made most of the garbage (and so
// most of the heap) of many parallel readers.
type streamBufs struct {
	blob []byte        // the blobReader's span buffer
	gz   *gzipStream   // the last gzip stream's bufio reader and decompressor
	zs   *zstd.Decoder // for zstd frames
}

// blobReader returns a blobReader at off that reads into b's span buffer.
func (b *streamBufs) blobReader(ctx context.Context, l *Layer, off int64) *blobReader {
	if span := l.m.opts.ReadSize; int64(cap(b.blob)) < span {
		b.blob = make([]byte, span)
	}
	return newBlobReaderInto(ctx, b.blob, l.blob, off, l.m.opts.ReadSize)
}

func (b *streamBufs) free() {
	if b.zs != nil {
		b.zs.Close()
	}
	*b = streamBufs{}
}

// openStream returns a stream positioned at or before off: at the nearest
// checkpoint (gzip) or frame (zstd) of idx if there is one, else at 0. It
// decodes into bufs, which no other open stream may use.
func (l *Layer) openStream(ctx context.Context, off int64, idx *layerIndex, bufs *streamBufs) (stream, error) {
	f, err := l.Format(ctx)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatTar:
		br := bufs.blobReader(ctx, l, off)
		return &readerStream{br: br, r: br, upos: off}, nil
	case FormatGzip:
		if idx != nil {
			if cp, ok := idx.checkpointFor(off); ok {
				return l.openGzip(ctx, &cp, bufs)
			}
		}
		return l.openGzip(ctx, nil, bufs)
	case FormatZstd:
		var fr zstdFrame
		if idx != nil {
			fr = idx.frameFor(off)
		}
		return l.openZstd(ctx, fr, bufs)
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

// openGzip starts a gzip stream at checkpoint cp, or at the blob's start
// if cp is nil.
func (l *Layer) openGzip(ctx context.Context, cp *checkpoint, bufs *streamBufs) (stream, error) {
	if cp == nil {
		br := bufs.blobReader(ctx, l, 0)
		bufs.gz = newGzipStreamInto(bufs.gz, br)
		return &readerStream{br: br, r: readerFunc(bufs.gz.read)}, nil
	}
	br := bufs.blobReader(ctx, l, cp.COff)
	gz, err := resumeGzipStream(bufs.gz, br, *cp)
	if err != nil {
		return nil, fmt.Errorf("layer %s: resume gzip at %d: %w", l.key, cp.UOff, err)
	}
	bufs.gz = gz
	return &readerStream{br: br, r: readerFunc(gz.read), upos: cp.UOff}, nil
}

func (l *Layer) openZstd(ctx context.Context, fr zstdFrame, bufs *streamBufs) (stream, error) {
	br := bufs.blobReader(ctx, l, fr.COff)
	var err error
	if bufs.zs == nil {
		// Concurrency 1 decodes synchronously, on the caller's goroutine, so
		// the blobReader's ctx is the caller's.
		bufs.zs, err = zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
	} else {
		err = bufs.zs.Reset(br)
	}
	if err != nil {
		bufs.free()
		return nil, fmt.Errorf("layer %s: zstd: %w", l.key, err)
	}
	return &readerStream{br: br, r: bufs.zs, upos: fr.UOff}, nil
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
	owner     *TarReader // whose cursor this is; nil: shared by TarReadAt callers
	bufs      streamBufs
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
		if c.owner != nil {
			m, err, ok := c.l.readShared(ctx, c.owner, p[n:], o)
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
	if idx == nil {
		// A pass still running has restart points already.
		idx = c.l.partialIndex()
	}
	s, err := c.l.openStream(ctx, off, idx, &c.bufs)
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

// cursorPool bounds the decoding cursors of a Manager, across its layers,
// and so the memory they hold (each up to a cursorWindow of output, a span
// buffer of Options.ReadSize and a decoder's state): more readers than
// cursors wait for one. Cursors not in use stay in the pool with their
// buffers and their place in a stream; when a new one is needed and the
// bound is reached, the least recently used is taken over.
type cursorPool struct {
	max     int
	mu      sync.Mutex
	live    int       // cursors in existence, in use or idle
	idle    []*cursor // not in use, least recently used first
	waiters int
	freed   chan struct{} // closed when a cursor is put back and someone waits
}

func newCursorPool(max int) *cursorPool {
	return &cursorPool{max: max, freed: make(chan struct{})}
}

// take returns a cursor for reading l at off, for owner (a TarReader) or
// shared (nil): owner's own cursor if it is idle, else for a shared read
// the idle one of l best placed for off, else a new one, else the least
// recently used idle one; if every cursor is in use it waits for one.
func (p *cursorPool) take(ctx context.Context, l *Layer, off int64, owner *TarReader) (*cursor, error) {
	for {
		p.mu.Lock()
		if c := p.takeIdleLocked(l, off, owner); c != nil {
			p.mu.Unlock()
			return c, nil
		}
		if p.live < p.max {
			p.live++
			p.mu.Unlock()
			return &cursor{l: l, owner: owner, streaming: owner != nil}, nil
		}
		if len(p.idle) > 0 {
			c := p.idle[0]
			p.idle = p.idle[1:]
			p.mu.Unlock()
			c.retarget(l, owner)
			return c, nil
		}
		p.waiters++
		wait := p.freed
		p.mu.Unlock()
		select {
		case <-wait:
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
		case <-ctx.Done():
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			return nil, fmt.Errorf("layer %s: wait for one of %d decoders: %w", l.key, p.max, ctx.Err())
		}
	}
}

func (p *cursorPool) takeIdleLocked(l *Layer, off int64, owner *TarReader) *cursor {
	best := -1
	for i, c := range p.idle {
		if owner != nil {
			if c.owner == owner {
				best = i
				break
			}
			continue
		}
		if c.l != l || c.owner != nil {
			continue
		}
		if off >= c.winOff && off < c.end() {
			best = i
			break
		}
		if !c.eof && c.end() <= off && (best < 0 || c.end() > p.idle[best].end()) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	c := p.idle[best]
	p.idle = append(p.idle[:best], p.idle[best+1:]...)
	return c
}

// put returns a cursor taken from the pool.
func (p *cursorPool) put(c *cursor) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.wakeLocked()
	p.mu.Unlock()
}

func (p *cursorPool) wakeLocked() {
	if p.waiters > 0 {
		close(p.freed)
		p.freed = make(chan struct{})
	}
}

// release frees owner's idle cursor, if the pool has not given it to
// another reader meanwhile.
func (p *cursorPool) release(owner *TarReader) {
	p.mu.Lock()
	var drop *cursor
	for i, c := range p.idle {
		if c.owner == owner {
			drop = c
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.live--
			p.wakeLocked()
			break
		}
	}
	p.mu.Unlock()
	if drop != nil {
		drop.close()
	}
}

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
	c, err := l.m.cursors.take(ctx, l, off, nil)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	n, err := c.readAt(ctx, p, off, idx)
	c.mu.Unlock()
	l.m.cursors.put(c)
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

// TarReader is one open reader of the uncompressed tar stream that keeps
// its place, so a sequential reader (tar -tf layer.tar) streams at full
// speed whatever else reads the layer. Its cursor counts against the
// Manager's bound: while the reader is idle, others may take the cursor
// over when every cursor is taken, and the reader then restarts at the
// nearest checkpoint. Close it when done.
type TarReader struct {
	l      *Layer
	mu     sync.Mutex // serializes ReadAt and Close
	closed bool
}

// NewTarReader opens a reader of the tar stream; it does no I/O.
func (l *Layer) NewTarReader() *TarReader {
	l.tarReaders.Add(1)
	return &TarReader{l: l}
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
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, fmt.Errorf("layer %s: read of a closed tar reader: %w", r.l.key, iofs.ErrClosed)
	}
	idx := r.l.loadedIndex(ctx)
	if idx == nil && f == FormatGzip {
		r.l.shareFor(ctx)
	}
	pool := r.l.m.cursors
	c, err := pool.take(ctx, r.l, off, r)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	n, err := c.readAt(ctx, p, off, idx)
	c.mu.Unlock()
	pool.put(c)
	if idx == nil && errors.Is(err, io.EOF) && f == FormatGzip {
		// The end may have come from the pass's output before the pass
		// saved its index: let the tar size be known first, so a stat
		// right after the reader sees the end has it.
		r.l.waitPass(ctx)
	}
	return n, err
}

// Close frees the reader's decoder and window.
func (r *TarReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.l.tarReaders.Add(-1)
	}
	r.l.detachShare(r)
	r.l.m.cursors.release(r)
	return nil
}
