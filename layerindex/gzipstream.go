package layerindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// gzipStream decodes a gzip blob (one or more members) with klauspost's
// flate, from the blob's start or from a checkpoint. The members' headers
// and trailers are read here: flate decodes one member's deflate data.
//
// Corrupt or truncated input is an error (errCorrupt, errTruncated), never
// output that passes as good: each member's CRC-32 and size are checked
// when the member was decoded from its start (a stream resumed at a
// checkpoint checks the members after the one it resumed in).
type gzipStream struct {
	br   *blobReader
	in   *bufio.Reader // over br: flate's fast path reads a *bufio.Reader
	fl   io.ReadCloser // klauspost's decompressor; nil before the first member
	uoff int64         // uncompressed offset of the next byte read returns
	done bool          // the last member ended, or decoding failed

	inMember bool   // inside a member's deflate data
	crc      uint32 // CRC-32 of the current member's output so far
	msize    uint32 // bytes of the current member's output, mod 2^32
	crcValid bool   // the member was decoded from its start: crc and msize are checkable
	drift    int64  // how far flate's byte count runs ahead of the input (see eob)
	cpLost   bool   // the drift could not be worked out: no more checkpoints in this member

	// onCheckpoint, if set, is told the place after every deflate block
	// that is not a member's last, with the output before it. The window
	// is only valid during the call. Set it before the first read.
	onCheckpoint func(flate.InflateCheckpoint)
}

// gzipBufSize is the bufio buffer between the blobReader and flate.
const gzipBufSize = 64 << 10

// windowSize is the deflate window: what a checkpoint keeps of the output
// before it.
const windowSize = 32 << 10

var (
	errTruncated = errors.New("gzip stream truncated")
	errCorrupt   = errors.New("compressed data corrupt")
)

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, a...))
}

// newGzipStream starts at the beginning of a gzip stream; br is at 0.
func newGzipStream(br *blobReader) *gzipStream {
	return newGzipStreamInto(nil, br)
}

// newGzipStreamInto is newGzipStream reusing the buffers of old, a stream
// no longer used (nil: none).
func newGzipStreamInto(old *gzipStream, br *blobReader) *gzipStream {
	s := &gzipStream{br: br}
	if old != nil {
		s.in, s.fl = old.in, old.fl
		s.in.Reset(br)
	} else {
		s.in = bufio.NewReaderSize(br, gzipBufSize)
	}
	return s
}

// resumeGzipStream starts at checkpoint cp (a deflate block start inside
// a member); br is at cp.COff. old's buffers are reused if it is not nil.
func resumeGzipStream(old *gzipStream, br *blobReader, cp checkpoint) (*gzipStream, error) {
	s := newGzipStreamInto(old, br)
	if err := s.startDeflate(flate.InflateCheckpoint{
		CompressedOffset:   cp.COff,
		BitOffset:          cp.Bit,
		UncompressedOffset: cp.UOff,
		Window:             cp.Window,
	}); err != nil {
		return nil, err
	}
	s.uoff = cp.UOff
	return s, nil
}

// pos is the blob offset of the next byte the members' parser or flate
// takes from the input.
func (s *gzipStream) pos() int64 { return s.br.offset() - int64(s.in.Buffered()) }

// startDeflate readies flate at cp: a member's first block (no window) or
// a checkpoint. cp.CompressedOffset is a blob offset, so the offsets flate
// reports are blob offsets too.
func (s *gzipStream) startDeflate(cp flate.InflateCheckpoint) error {
	var err error
	if s.fl == nil || s.onCheckpoint != nil {
		// The callback does not survive ResetCP: a pass that takes
		// checkpoints makes a decompressor per member.
		opts := []flate.ReaderOpt{flate.WithResumeFrom(cp)}
		if s.onCheckpoint != nil {
			opts = append(opts, flate.WithEobCallback(s.eob))
		}
		s.fl = flate.NewReaderOpts(s.in, opts...)
	} else {
		err = s.fl.(interface {
			ResetCP(io.Reader, flate.InflateCheckpoint) error
		}).ResetCP(s.in, cp)
	}
	if err != nil {
		return inflateErr(err)
	}
	s.inMember, s.drift, s.cpLost = true, 0, false
	return nil
}

// eob corrects a block end's checkpoint before passing it on. flate
// (v1.20.4) counts the whole bytes left in its bit buffer twice when a
// stored block starts, so its CompressedOffset runs ahead of the input by
// up to 3 bytes per stored block. Called once per block, when flate has
// taken exactly the input up to the block's end, it works the lead out: a
// stored block ends with no bits buffered (CompressedOffset is then flate's
// count, BitOffset 0); any other block leaves 0-32 bits buffered, with the
// lead unchanged. If a block fits neither, the member's later checkpoints
// are dropped, never recorded wrong.
func (s *gzipStream) eob(cp flate.InflateCheckpoint) {
	bits := cp.CompressedOffset*8 + int64(cp.BitOffset)
	buffered := (s.pos()+s.drift)*8 - bits // bits flate holds, if the lead did not grow
	switch {
	case buffered < 0 && cp.BitOffset == 0 && buffered%8 == 0:
		s.drift += -buffered / 8 // a stored block that grew the lead
	case buffered < 0 || buffered > 32:
		s.cpLost = true
	}
	if cp.Final || s.cpLost {
		return
	}
	cp.CompressedOffset -= s.drift
	s.onCheckpoint(cp)
}

// read hands out decoded output; io.EOF after the last member.
func (s *gzipStream) read(p []byte) (int, error) {
	for !s.done {
		if !s.inMember {
			more, err := s.member()
			if err != nil {
				s.done = true
				return 0, err
			}
			if !more {
				s.done = true
				break
			}
		}
		n, err := s.fl.Read(p)
		if s.crcValid {
			s.crc = crc32.Update(s.crc, crc32.IEEETable, p[:n])
			s.msize += uint32(n)
		}
		s.uoff += int64(n)
		if errors.Is(err, io.EOF) {
			s.inMember = false
			err = s.trailer()
		}
		if err != nil {
			s.done = true
			return n, inflateErr(err)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}

// inflateErr maps flate's and bufio's errors onto errCorrupt and errTruncated.
func inflateErr(err error) error {
	var ce flate.CorruptInputError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%w: deflate data at byte %d", errCorrupt, int64(ce))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w", errTruncated, err)
	}
	return err
}

// member reads a member's header and starts its deflate data; more is
// false at the end of the input.
func (s *gzipStream) member() (more bool, err error) {
	if err := readGzipHeader(s.in, s.pos()); errors.Is(err, io.EOF) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	s.crc, s.msize, s.crcValid = 0, 0, true
	return true, s.startDeflate(flate.InflateCheckpoint{CompressedOffset: s.pos(), UncompressedOffset: s.uoff})
}

// trailer reads the member's CRC-32 and size and checks them.
func (s *gzipStream) trailer() error {
	var t [8]byte
	if _, err := io.ReadFull(s.in, t[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("gzip trailer: %w", errTruncated)
		}
		return fmt.Errorf("gzip trailer: %w", err)
	}
	crc, size := binary.LittleEndian.Uint32(t[:4]), binary.LittleEndian.Uint32(t[4:])
	if s.crcValid && (crc != s.crc || size != s.msize) {
		return corrupt("gzip member checksum: got crc %08x size %d, trailer says crc %08x size %d", s.crc, s.msize, crc, size)
	}
	return nil
}

// readerFunc adapts a read method (such as a gzipStream's) to io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
