package tarsum

import (
	"archive/tar"
	"io"
	"slices"
	"strconv"
	"strings"
)

const xattrPAXPrefix = "SCHILY.xattr."

// appendHeaderFields appends the "<key><value>" string that an entry's hash
// starts with. typeflag is passed separately because Go's tar reader rewrites
// the legacy '\x00' flag that older docker releases hashed as stored.
func appendHeaderFields(dst []byte, h *tar.Header, typeflag byte, v Version, ignoreOwnerNames bool) []byte {
	dst = append(dst, "name"...)
	dst = append(dst, h.Name...)
	dst = append(dst, "mode"...)
	dst = strconv.AppendInt(dst, h.Mode, 10)
	dst = append(dst, "uid"...)
	dst = strconv.AppendInt(dst, int64(h.Uid), 10)
	dst = append(dst, "gid"...)
	dst = strconv.AppendInt(dst, int64(h.Gid), 10)
	dst = append(dst, "size"...)
	dst = strconv.AppendInt(dst, h.Size, 10)
	if v == Version0 {
		dst = append(dst, "mtime"...)
		dst = strconv.AppendInt(dst, h.ModTime.UTC().Unix(), 10)
	}
	dst = append(dst, "typeflag"...)
	dst = append(dst, typeflag)
	dst = append(dst, "linkname"...)
	dst = append(dst, h.Linkname...)
	dst = append(dst, "uname"...)
	if !ignoreOwnerNames {
		dst = append(dst, h.Uname...)
	}
	dst = append(dst, "gname"...)
	if !ignoreOwnerNames {
		dst = append(dst, h.Gname...)
	}
	dst = append(dst, "devmajor"...)
	dst = strconv.AppendInt(dst, h.Devmajor, 10)
	dst = append(dst, "devminor"...)
	dst = strconv.AppendInt(dst, h.Devminor, 10)
	if v == Version0 {
		return dst
	}
	var keys []string
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, xattrPAXPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		dst = append(dst, k[len(xattrPAXPrefix):]...)
		dst = append(dst, h.PAXRecords[k]...)
	}
	return dst
}

const blockSize = 512

// headerRecorder sits directly under tar.Reader, which reads each header as
// one 512-byte block with nothing buffered in between, so right after Next
// the last block it saw is the entry's own header. It also counts the tar
// offset for error messages.
type headerRecorder struct {
	r    io.Reader
	off  int64
	last [blockSize]byte
}

func (hr *headerRecorder) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.off += int64(n)
	switch {
	case n >= blockSize:
		copy(hr.last[:], p[n-blockSize:n])
	case n > 0:
		copy(hr.last[:], hr.last[n:])
		copy(hr.last[blockSize-n:], p[:n])
	}
	return n, err
}

// storedTypeflag returns the typeflag byte as the archive stores it. Go's
// reader turns the pre-POSIX '\x00' into '0' or '5'; the header block still
// holds the original. Only a block that verifies as a tar header is trusted.
func (hr *headerRecorder) storedTypeflag(h *tar.Header) byte {
	if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
		return h.Typeflag
	}
	// GNU sparse 1.x keeps its map at the start of the data, which the reader
	// has already consumed, so the last block is not the header.
	if _, ok := h.PAXRecords["GNU.sparse.major"]; ok {
		return h.Typeflag
	}
	const typeflagOffset = 156
	if hr.last[typeflagOffset] != 0 || !validHeaderChecksum(&hr.last) {
		return h.Typeflag
	}
	return tar.TypeRegA //nolint:staticcheck // the deprecated flag is exactly what was stored
}

// validHeaderChecksum checks a header block's checksum field, accepting the
// unsigned and the historic signed byte sums as tar readers do.
func validHeaderChecksum(b *[blockSize]byte) bool {
	const chkOff, chkLen = 148, 8
	field := strings.Trim(string(b[chkOff:chkOff+chkLen]), " \x00")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var unsigned, signed int64
	for i, c := range b {
		if chkOff <= i && i < chkOff+chkLen {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}
