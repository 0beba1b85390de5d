package layercache

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
)

// fileWriter writes one disk tier file: Write the data, then Commit adds
// the trailer and renames the temp file into place, so the file appears
// whole or not at all; Abort (or a failed Commit) removes it. No fsync:
// after a power loss a file may read back torn, and its trailer rejects it.
type fileWriter struct {
	path string // where Commit puts it
	bind string // its path relative to DiskDir, bound by the trailer
	tmp  *os.File
	n    int64  // data bytes written
	crc  uint32 // their CRC-32C
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > math.MaxUint32 {
		return 0, fmt.Errorf("%d bytes is too large", w.n+int64(len(p)))
	}
	n, err := w.tmp.Write(p)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.n += int64(n)
	return n, err
}

// Commit writes the trailer and puts the file in place; on error the file
// is removed.
func (w *fileWriter) Commit() error {
	tr := trailer(w.n, crc32.Update(w.crc, castagnoli, []byte(w.bind)))
	_, err := w.tmp.Write(tr[:])
	if cerr := w.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp.Name(), w.path)
	}
	if err != nil {
		_ = os.Remove(w.tmp.Name())
		return err
	}
	return nil
}

// size is the file's size: data and trailer.
func (w *fileWriter) size() int64 { return w.n + trailerSize }

// Abort removes the file being written.
func (w *fileWriter) Abort() {
	_ = w.tmp.Close()
	_ = os.Remove(w.tmp.Name())
}

// makeTrailer is the trailer of data stored at rel (relative to DiskDir).
func makeTrailer(data []byte, rel string) [trailerSize]byte {
	crc := crc32.Checksum(data, castagnoli)
	return trailer(int64(len(data)), crc32.Update(crc, castagnoli, []byte(rel)))
}

// trailer is the trailer of n data bytes whose CRC-32C (then of their
// place) is crc.
func trailer(n int64, crc uint32) [trailerSize]byte {
	var tr [trailerSize]byte
	copy(tr[:8], trailerMagic)
	binary.LittleEndian.PutUint32(tr[8:12], uint32(n))
	binary.LittleEndian.PutUint32(tr[12:16], crc)
	return tr
}
