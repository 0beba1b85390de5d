package layerindex

import (
	"context"
	"io/fs"
	"time"
)

// ReaderAt is a blob's stored (compressed) bytes, normally served by
// layercache. The same interface is handed out for uncompressed content.
type ReaderAt interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
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
