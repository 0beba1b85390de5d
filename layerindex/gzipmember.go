package layerindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// A gzip member's header may carry a file name, a comment and an extra
// field of any length (RFC 1952 sets no bound). The standard library's
// and klauspost's gzip.Reader refuse a name or comment of 512 bytes or
// more, so every member is read here instead: gzipStream for passes and
// restarts, gzipMember for the single members of eStargz (TOC, chunks).

// gzipHeaderReader is what the header parser reads from.
type gzipHeaderReader interface {
	io.Reader
	io.ByteReader
}

// readGzipHeader reads a member's header from its first byte (10 fixed
// bytes, then the optional fields flg names). start is the member's
// offset, for errors. It returns io.EOF if r is empty.
func readGzipHeader(r gzipHeaderReader, start int64) error {
	var hdr [10]byte
	n, err := io.ReadFull(r, hdr[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return io.EOF
	}
	if err != nil {
		return gzipHeaderErr(err)
	}
	if hdr[0] != 0x1f || hdr[1] != 0x8b {
		return corrupt("bad gzip magic %x at byte %d", hdr[:2], start)
	}
	if hdr[2] != 8 {
		return corrupt("gzip compression method %d, want 8 (deflate)", hdr[2])
	}
	flg := hdr[3]
	if flg&0x04 != 0 { // FEXTRA
		var x [2]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return gzipHeaderErr(err)
		}
		if _, err := io.CopyN(io.Discard, r, int64(binary.LittleEndian.Uint16(x[:]))); err != nil {
			return gzipHeaderErr(err)
		}
	}
	for _, f := range []byte{0x08, 0x10} { // FNAME, FCOMMENT: zero-terminated, any length
		if flg&f == 0 {
			continue
		}
		for {
			b, err := r.ReadByte()
			if err != nil {
				return gzipHeaderErr(err)
			}
			if b == 0 {
				break
			}
		}
	}
	if flg&0x02 != 0 { // FHCRC
		var x [2]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return gzipHeaderErr(err)
		}
	}
	return nil
}

func gzipHeaderErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("gzip header: %w", errTruncated)
	}
	return fmt.Errorf("gzip header: %w", err)
}

// gzipMember reads the one gzip member at the start of b; its CRC-32 and
// size are checked when its output is read to the end.
type gzipMember struct {
	in   *bytes.Reader
	fl   io.ReadCloser
	crc  uint32
	size uint32
	err  error // sticky: the end (io.EOF) or the first failure
}

func newGzipMember(b []byte) (*gzipMember, error) {
	in := bytes.NewReader(b)
	if err := readGzipHeader(in, 0); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("gzip header: %w", errTruncated)
		}
		return nil, err
	}
	return &gzipMember{in: in, fl: flate.NewReader(in)}, nil
}

func (m *gzipMember) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	n, err := m.fl.Read(p)
	m.crc = crc32.Update(m.crc, crc32.IEEETable, p[:n])
	m.size += uint32(n)
	if errors.Is(err, io.EOF) {
		var t [8]byte
		if _, terr := io.ReadFull(m.in, t[:]); terr != nil {
			err = fmt.Errorf("gzip trailer: %w", errTruncated)
		} else if crc, size := binary.LittleEndian.Uint32(t[:4]), binary.LittleEndian.Uint32(t[4:]); crc != m.crc || size != m.size {
			err = corrupt("gzip member checksum: got crc %08x size %d, trailer says crc %08x size %d", m.crc, m.size, crc, size)
		}
	} else if err != nil {
		err = inflateErr(err)
	}
	m.err = err
	return n, err
}
