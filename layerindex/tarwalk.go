package layerindex

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"errors"
	"fmt"
	"io"
)

// An uncompressed tar's index is read from its headers alone: archive/tar
// seeks over a file's data, so a pass costs one small read per entry.

// tarWalkWindow is what a seekBlob read fetches: enough for the data's last
// byte, the padding and the next header together, and for several headers
// of small files at once.
const tarWalkWindow = 4 << 10

// seekBlob is an io.ReadSeeker over a blob for archive/tar: a read fetches
// a small window at the position, a seek only moves it.
type seekBlob struct {
	ctx    context.Context
	blob   blobio.ReaderAt
	size   int64
	pos    int64
	buf    []byte
	bufOff int64
	err    error       // the first error of the blob itself, not of the tar
	onMove func(int64) // told the position after each read
}

func (s *seekBlob) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.pos >= s.size {
		return 0, io.EOF
	}
	if s.pos < s.bufOff || s.pos >= s.bufOff+int64(len(s.buf)) {
		n := min(max(int64(tarWalkWindow), int64(len(p))), s.size-s.pos)
		if int64(cap(s.buf)) < n {
			s.buf = make([]byte, n)
		}
		s.buf = s.buf[:n]
		got, err := s.blob.ReadAt(s.ctx, s.buf, s.pos)
		if int64(got) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			s.buf = s.buf[:0]
			err = fmt.Errorf("read blob at %d: %w", s.pos, err)
			if s.err == nil {
				s.err = err
			}
			return 0, err
		}
		s.bufOff = s.pos
	}
	n := copy(p, s.buf[s.pos-s.bufOff:])
	s.pos += int64(n)
	if s.onMove != nil {
		s.onMove(s.pos)
	}
	return n, nil
}

func (s *seekBlob) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += s.pos
	case io.SeekEnd:
		off += s.size
	default:
		return s.pos, fmt.Errorf("seek: whence %d", whence)
	}
	if off < 0 {
		return s.pos, fmt.Errorf("seek to %d: negative position", off)
	}
	s.pos = off
	return off, nil
}

// buildTarIndex indexes an uncompressed tar blob from its headers alone.
func (l *Layer) buildTarIndex(ctx context.Context, idx *layerIndex) (*layerIndex, error) {
	sb := &seekBlob{ctx: ctx, blob: l.blob, size: l.blob.Size(), onMove: func(pos int64) { l.build.done.Store(pos) }}
	tarIdx, tarErr := readTarIndexAt(sb, l.newIndexBuilder(idx))
	if sb.err != nil {
		return nil, sb.err // the blob, not the tar, is broken
	}
	if errors.Is(tarErr, ErrIndexMemory) {
		return nil, tarErr // not the tar's fault: never saved as its state
	}
	l.build.done.Store(sb.size)
	idx.TarSize = sb.size
	idx.Tar = tarIdx
	if tarErr != nil {
		idx.TarErr, idx.tarErr = tarErr.Error(), tarErr
	}
	return idx, nil
}
