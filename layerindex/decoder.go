package layerindex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"
)

// decoder restarts the decoding of one blob's tar stream (soci's Zinfo is
// the shape): it knows which restart point serves an uncompressed offset
// and how to decode from one, reading the blob through its source. There
// is one per format: tarDecoder, gzipDecoder (checkpoints), zstdDecoder
// (frames). An eStargz blob's files are read through its TOC instead
// (estargz.go); its tar stream is gzip.
type decoder interface {
	// restartPoint is the uncompressed offset decoding for off starts at.
	restartPoint(off int64) int64
	// open returns a stream at restartPoint(off), decoding into bufs,
	// which no other open stream may use.
	open(ctx context.Context, off int64, bufs *streamBufs) (*stream, error)
}

// blobSource is what a decoder reads: a layer's blob, in spans of
// readSize (Options.ReadSize, the cache's block size).
type blobSource struct {
	key      string // for errors
	blob     Blob
	readSize int64
}

// reader returns a blobReader at off that reads into bufs' span buffer.
func (s blobSource) reader(ctx context.Context, off int64, bufs *streamBufs) *blobReader {
	if int64(cap(bufs.blob)) < s.readSize {
		bufs.blob = make([]byte, s.readSize)
	}
	return newBlobReaderInto(ctx, bufs.blob, s.blob, off, s.readSize)
}

// newDecoder returns the decoder of a blob stored as f, restarting at the
// points idx holds (nil: none known yet, decode from the start).
func newDecoder(f Format, src blobSource, idx *layerIndex) decoder {
	switch f {
	case FormatTar:
		return tarDecoder{src}
	case FormatGzip:
		d := gzipDecoder{src: src}
		if idx != nil {
			d.checkpoints = idx.Checkpoints
		}
		return d
	case FormatZstd:
		d := zstdDecoder{src: src}
		if idx != nil {
			d.frames = idx.Frames
		}
		return d
	}
	return unknownDecoder{src.key, f}
}

// unknownDecoder is a format this package does not decode: every open fails.
type unknownDecoder struct {
	key string
	f   Format
}

func (d unknownDecoder) restartPoint(off int64) int64 { return off }

func (d unknownDecoder) open(context.Context, int64, *streamBufs) (*stream, error) {
	return nil, fmt.Errorf("layer %s: unknown format %v", d.key, d.f)
}

// tarDecoder reads an uncompressed tar: it restarts anywhere.
type tarDecoder struct{ src blobSource }

func (d tarDecoder) restartPoint(off int64) int64 { return off }

func (d tarDecoder) open(ctx context.Context, off int64, bufs *streamBufs) (*stream, error) {
	br := d.src.reader(ctx, off, bufs)
	return &stream{br: br, r: br, upos: off}, nil
}

// gzipDecoder restarts a gzip blob at its checkpoints (zran).
type gzipDecoder struct {
	src         blobSource
	checkpoints []checkpoint // sorted by UOff
}

func (d gzipDecoder) restartPoint(off int64) int64 {
	cp, _ := checkpointFor(d.checkpoints, off)
	return cp.UOff
}

func (d gzipDecoder) open(ctx context.Context, off int64, bufs *streamBufs) (*stream, error) {
	cp, ok := checkpointFor(d.checkpoints, off)
	if !ok {
		br := d.src.reader(ctx, 0, bufs)
		bufs.gz = newGzipStreamInto(bufs.gz, br)
		return &stream{br: br, r: readerFunc(bufs.gz.read)}, nil
	}
	br := d.src.reader(ctx, cp.COff, bufs)
	gz, err := resumeGzipStream(bufs.gz, br, cp)
	if err != nil {
		return nil, fmt.Errorf("layer %s: resume gzip at %d: %w", d.src.key, cp.UOff, err)
	}
	bufs.gz = gz
	var r io.Reader = readerFunc(gz.read)
	if cp.CheckLen > 0 {
		head := make([]byte, cp.CheckLen)
		if _, err := io.ReadFull(r, head); err != nil {
			return nil, fmt.Errorf("layer %s: resume gzip at %d: %w", d.src.key, cp.UOff, inflateErr(err))
		}
		if got := crc32.ChecksumIEEE(head); got != cp.Check {
			return nil, fmt.Errorf("layer %s: resume gzip at %d: %w", d.src.key, cp.UOff,
				corrupt("the checkpoint decodes to other bytes than the index pass saw (crc %08x, want %08x)", got, cp.Check))
		}
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	return &stream{br: br, r: r, upos: cp.UOff}, nil
}

// zstdDecoder restarts a zstd blob at its frames.
type zstdDecoder struct {
	src    blobSource
	frames []zstdFrame // sorted by UOff
}

func (d zstdDecoder) restartPoint(off int64) int64 { return frameFor(d.frames, off).UOff }

func (d zstdDecoder) open(ctx context.Context, off int64, bufs *streamBufs) (*stream, error) {
	fr := frameFor(d.frames, off)
	br := d.src.reader(ctx, fr.COff, bufs)
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
		return nil, fmt.Errorf("layer %s: zstd: %w", d.src.key, err)
	}
	return &stream{br: br, r: bufs.zs, upos: fr.UOff}, nil
}

// stream decodes the tar stream sequentially from pos(), a decoder's
// reader over a blobReader. It is used by one goroutine at a time; read
// returns io.EOF at the end of the tar stream.
type stream struct {
	br   *blobReader
	r    io.Reader
	upos int64
}

func (s *stream) read(ctx context.Context, p []byte) (int, error) {
	s.br.ctx = ctx
	n, err := s.r.Read(p)
	s.upos += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("decode at uncompressed offset %d (blob offset %d): %w", s.upos, s.br.offset(), err)
	}
	return n, err
}

func (s *stream) pos() int64 { return s.upos }

// streamBufs are a cursor's decoder buffers, kept across the restarts of
// its stream, which random reads make often: a span buffer, the gzip
// stream's bufio reader and deflate state, a zstd decoder.
type streamBufs struct {
	blob []byte        // the blobReader's span buffer
	gz   *gzipStream   // the last gzip stream, whose buffers the next reuses
	zs   *zstd.Decoder // for zstd frames
}

func (b *streamBufs) free() {
	if b.zs != nil {
		b.zs.Close()
	}
	*b = streamBufs{}
}
