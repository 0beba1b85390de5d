package layerindex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdFrameStream decodes a zstd blob frame by frame, noting where each
// frame starts (stored and uncompressed) so later reads can start at the
// frame holding their offset. It finds frame ends by walking block headers
// as the bytes pass by, so the blob is read once.
type zstdFrameStream struct {
	br      *blobReader
	dec     *zstd.Decoder
	frame   *zstdFrameReader // the frame being decoded, nil between frames
	uoff    int64
	onFrame func(zstdFrame)
}

func newZstdFrameStream(br *blobReader) (*zstdFrameStream, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return &zstdFrameStream{br: br, dec: dec}, nil
}

func (z *zstdFrameStream) close() { z.dec.Close() }

func (z *zstdFrameStream) Read(p []byte) (int, error) {
	for {
		if z.frame == nil {
			if _, err := z.br.ReadByte(); err != nil {
				if errors.Is(err, io.EOF) {
					return 0, io.EOF
				}
				return 0, err
			}
			z.br.pos-- // only peeked
			if z.onFrame != nil {
				z.onFrame(zstdFrame{COff: z.br.offset(), UOff: z.uoff})
			}
			z.frame = &zstdFrameReader{br: z.br}
			if err := z.dec.Reset(z.frame); err != nil {
				return 0, fmt.Errorf("zstd frame at %d: %w", z.br.offset(), err)
			}
		}
		n, err := z.dec.Read(p)
		z.uoff += int64(n)
		if errors.Is(err, io.EOF) {
			if !z.frame.done {
				return n, fmt.Errorf("zstd frame ended early: %w", io.ErrUnexpectedEOF)
			}
			z.frame = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("zstd at blob offset %d: %w", z.br.offset(), err)
		}
		return n, nil
	}
}

// zstdFrameReader passes through exactly one zstd (or skippable) frame.
type zstdFrameReader struct {
	br      *blobReader
	pending []byte // header bytes read to parse, not yet passed on
	body    int64  // bytes of block content (or skippable data) to pass on
	state   int
	last    bool
	check   bool // the frame ends with a 4-byte checksum
	done    bool
}

const (
	zfHeader = iota
	zfBlock
	zfChecksum
	zfDone
)

// take reads n header bytes into pending and returns them.
func (r *zstdFrameReader) take(n int) ([]byte, error) {
	start := len(r.pending)
	for i := 0; i < n; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("zstd frame header: %w", err)
		}
		r.pending = append(r.pending, c)
	}
	return r.pending[start:], nil
}

func (r *zstdFrameReader) next() error {
	switch r.state {
	case zfHeader:
		m, err := r.take(4)
		if err != nil {
			return err
		}
		magic := binary.LittleEndian.Uint32(m)
		if magic&0xfffffff0 == 0x184d2a50 {
			sz, err := r.take(4)
			if err != nil {
				return err
			}
			r.body = int64(binary.LittleEndian.Uint32(sz))
			r.state = zfDone
			return nil
		}
		if magic != 0xfd2fb528 {
			return fmt.Errorf("not a zstd frame (magic %08x)", magic)
		}
		d, err := r.take(1)
		if err != nil {
			return err
		}
		fhd := d[0]
		n := 0
		if fhd&0x20 == 0 {
			n++ // window descriptor
		}
		n += []int{0, 1, 2, 4}[fhd&3]
		switch fhd >> 6 {
		case 0:
			if fhd&0x20 != 0 {
				n++
			}
		case 1:
			n += 2
		case 2:
			n += 4
		case 3:
			n += 8
		}
		r.check = fhd&0x04 != 0
		if _, err := r.take(n); err != nil {
			return err
		}
		r.state = zfBlock
	case zfBlock:
		if r.last {
			r.state = zfChecksum
			return nil
		}
		h, err := r.take(3)
		if err != nil {
			return err
		}
		v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
		r.last = v&1 == 1
		size := int64(v >> 3)
		switch v >> 1 & 3 {
		case 0, 2:
			r.body = size
		case 1:
			r.body = 1
		default:
			return errors.New("zstd: reserved block type")
		}
	case zfChecksum:
		if r.check {
			if _, err := r.take(4); err != nil {
				return err
			}
		}
		r.state = zfDone
	case zfDone:
		r.done = true
	}
	return nil
}

func (r *zstdFrameReader) Read(p []byte) (int, error) {
	for {
		if len(r.pending) > 0 {
			n := copy(p, r.pending)
			r.pending = r.pending[n:]
			return n, nil
		}
		if r.body > 0 {
			q := p
			if int64(len(q)) > r.body {
				q = q[:r.body]
			}
			n, err := r.br.Read(q)
			r.body -= int64(n)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
		if r.state == zfDone && len(r.pending) == 0 && r.body == 0 {
			r.done = true
		}
	}
}
