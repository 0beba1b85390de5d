package layerindex

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"errors"
	"fmt"
	"io"
)

// defaultReadSize is the span read from the blob at a time on sequential passes.
const defaultReadSize = 1 << 20

// blobReader reads a blob sequentially from an offset, in spans aligned to
// span bytes, so the cache underneath sees whole aligned blocks. It carries
// the ctx of the current caller: set ctx before each use (it is used by one
// goroutine at a time).
type blobReader struct {
	ctx    context.Context
	blob   blobio.ReaderAt
	span   int64
	buf    []byte
	bufOff int64 // blob offset of buf[0]
	pos    int   // next unread byte in buf
	next   int64 // blob offset of the next span to read
	end    int64 // stop reading here (blob size, or less)
	read   int64 // bytes fetched from the blob so far
	onFill func(n int64)
}

func newBlobReader(ctx context.Context, blob blobio.ReaderAt, off, span int64) *blobReader {
	return newBlobReaderInto(ctx, nil, blob, off, span)
}

// newBlobReaderInto is newBlobReader reusing buf (from a blobReader that is
// no longer used) for its spans.
func newBlobReaderInto(ctx context.Context, buf []byte, blob blobio.ReaderAt, off, span int64) *blobReader {
	if span <= 0 {
		span = defaultReadSize
	}
	return &blobReader{ctx: ctx, blob: blob, span: span, buf: buf[:0], bufOff: off, next: off, end: blob.Size()}
}

// offset is the blob offset of the next byte Read or ReadByte returns.
func (b *blobReader) offset() int64 { return b.bufOff + int64(b.pos) }

func (b *blobReader) fill() error {
	if b.next >= b.end {
		return io.EOF
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	// Read up to the next aligned boundary, so later spans are aligned.
	stop := (b.next/b.span + 1) * b.span
	if stop > b.end {
		stop = b.end
	}
	n := int(stop - b.next)
	if cap(b.buf) < int(b.span) {
		b.buf = make([]byte, b.span)
	}
	b.buf = b.buf[:n]
	got, err := b.blob.ReadAt(b.ctx, b.buf, b.next)
	b.read += int64(got)
	if b.onFill != nil {
		b.onFill(int64(got))
	}
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read blob at %d: %w", b.next, err)
	}
	b.bufOff, b.pos = b.next, 0
	b.next = stop
	return nil
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.pos >= len(b.buf) {
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.pos:])
	b.pos += n
	return n, nil
}

func (b *blobReader) ReadByte() (byte, error) {
	if b.pos >= len(b.buf) {
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	c := b.buf[b.pos]
	b.pos++
	return c, nil
}
