package layerindex

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"io/fs"
	"time"
)

// Blob is a layer's stored bytes as the index reads them: ReadAt for
// passes and decoders (in read spans, which the cache serves whole and
// reads ahead of), ReadExact for small reads far apart (a format probe, an
// eStargz footer and TOC, one small file's chunks), which fetches only the
// bytes asked for when they are not cached. layercache.Reader is one; for a
// source with no blocks around its reads, UncachedBlob makes one.
type Blob interface {
	blobio.ReaderAt
	ReadExact(ctx context.Context, p []byte, off int64) (int, error)
}

// UncachedBlob is a Blob over r whose every read fetches just its bytes:
// ReadExact is r's ReadAt.
func UncachedBlob(r blobio.ReaderAt) Blob { return uncachedBlob{r} }

type uncachedBlob struct{ blobio.ReaderAt }

func (b uncachedBlob) ReadExact(ctx context.Context, p []byte, off int64) (int, error) {
	return b.ReadAt(ctx, p, off)
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
	// Set by a streaming index pass (gzip, zstd), so a reader of an index
	// published by someone else can check an entry against the tar itself:
	// HeaderOff is where the entry's header blocks (PAX and GNU records
	// included) start in the tar stream; ContentSHA256 is the sha256 of a
	// regular file's content (zero: not computed); HeaderName is the name
	// in the header when Name is not it (a hardlink that took over the data
	// of a target replaced after it).
	HeaderOff     int64
	ContentSHA256 [32]byte
	HeaderName    string
}
