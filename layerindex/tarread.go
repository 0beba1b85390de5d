package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sync"
)

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
	l.share.tarReaders.Add(1)
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
		r.l.share.tarReaders.Add(-1)
	}
	r.l.share.detach(r)
	r.l.m.cursors.release(r)
	return nil
}

// shareFor readies a TarReader's read of a gzip layer with no index yet:
// it makes sure a pass runs with a share to publish to before the read
// needs it, so the reader never starts a decode of its own at offset 0
// while the pass is getting ready.
// After a failed pass it starts none (nil, nil): the reader decodes on its
// own, rather than every read starting another pass.
func (l *Layer) shareFor(ctx context.Context) (*passShare, *build) {
	if l.build.lastFailed() {
		return nil, nil
	}
	if l.share.cur.Load() == nil {
		l.share.cur.CompareAndSwap(nil, newPassShare())
	}
	b := l.startBuild(ctx)
	s := l.share.cur.Load()
	if s != nil {
		s.mu.Lock()
		if s.build == nil {
			s.build = b
		}
		s.mu.Unlock()
	}
	return s, b
}

// TarSizeOrStream is TarSize for the opener of a TarReader (made before
// this call) who can also stream without knowing the size: for a gzip
// layer whose index pass runs, it returns known false as soon as the pass
// holds back its output for that reader's first read (the pass shares its
// output with TarReaders, keeping a bounded ring of it), rather than
// waiting for the pass to end, which would mean decoding the stream twice.
func (l *Layer) TarSizeOrStream(ctx context.Context) (size int64, known bool, err error) {
	f, err := l.Format(ctx)
	if err != nil {
		return 0, false, err
	}
	if f != FormatGzip || l.loadedIndex(ctx) != nil {
		size, err := l.TarSize(ctx)
		return size, err == nil, err
	}
	if sg, err := l.stargz(ctx); err != nil {
		return 0, false, err
	} else if sg != nil {
		size, err := l.TarSize(ctx)
		return size, err == nil, err
	}
	s, b := l.shareFor(ctx)
	if b == nil {
		size, err := l.TarSize(ctx)
		return size, err == nil, err
	}
	var held <-chan struct{}
	if s != nil {
		held = s.held
	}
	select {
	case <-b.done:
		if b.err != nil {
			return 0, false, b.err
		}
		return b.idx.TarSize, true, nil
	case <-held:
		return 0, false, nil
	case <-ctx.Done():
		return 0, false, fmt.Errorf("wait for index of layer %s: %w", l.key, ctx.Err())
	}
}
