package layerindex

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"io/fs"
	"time"
)

// ExactReaderAt is optionally implemented by a blob blobio.ReaderAt (the block
// cache's Reader is one): ReadExact reads like ReadAt but, when the bytes
// are not cached, fetches only them rather than every cache block they
// touch. The index uses it for small reads far apart: a format probe, an
// eStargz footer and TOC, one file's chunks.
type ExactReaderAt interface {
	ReadExact(ctx context.Context, p []byte, off int64) (int, error)
}

// readExact reads with blob's ReadExact if it has one, else ReadAt.
func readExact(ctx context.Context, blob blobio.ReaderAt, p []byte, off int64) (int, error) {
	if x, ok := blob.(ExactReaderAt); ok {
		return x.ReadExact(ctx, p, off)
	}
	return blob.ReadAt(ctx, p, off)
}

// Entry is one tar entry, with its header fields and where its data lives
// in the uncompressed tar stream.
type Entry struct {
	Name     string // cleaned path, relative, no leading "/" or "./"; "" never
	Type     byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Mode     fs.FileMode
	UID, GID int
	Size     int64
	ModTime  time.Time
	Linkname string // symlink target, or hardlink target path (cleaned)
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string // from SCHILY.xattr.* PAX records
	Offset   int64             // offset of the data in the uncompressed tar stream; -1 if none or not contiguous (dirs, eStargz, sparse)
	Implicit bool              // a parent directory the tar never lists, made up with mode 0755
}
