package layerindex

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// Format is how a blob's tar stream is stored.
type Format int

const (
	FormatTar  Format = iota // uncompressed tar
	FormatGzip               // gzip (also eStargz, which is valid gzip)
	FormatZstd               // zstd, one or more frames
)

func (f Format) String() string {
	switch f {
	case FormatTar:
		return "tar"
	case FormatGzip:
		return "gzip"
	case FormatZstd:
		return "zstd"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// detectFormat looks at the first bytes of a blob. Anything that is neither
// gzip nor zstd is taken as an uncompressed tar; the tar reader judges it.
func detectFormat(ctx context.Context, blob Blob) (Format, error) {
	var head [4]byte
	n := int64(len(head))
	if s := blob.Size(); s < n {
		n = s
	}
	if n == 0 {
		return FormatTar, nil
	}
	got, err := blob.ReadExact(ctx, head[:n], 0)
	if err != nil && !(err == io.EOF && int64(got) == n) {
		return 0, fmt.Errorf("read blob header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head[:n], gzipMagic):
		return FormatGzip, nil
	case bytes.HasPrefix(head[:n], zstdMagic), n == 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		// The second form is a zstd skippable frame (0x184D2A5?).
		return FormatZstd, nil
	}
	return FormatTar, nil
}
