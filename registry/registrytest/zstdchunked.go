package registrytest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// The layer descriptor annotations of a zstd:chunked layer
// (containers/storage's format).
const (
	// ZstdChunkedChecksumAnnotation is the sha256 of the compressed TOC.
	ZstdChunkedChecksumAnnotation = "io.github.containers.zstd-chunked.manifest-checksum"
	// ZstdChunkedPositionAnnotation is "offset:length:uncompressed length:1",
	// where the compressed TOC lies in the blob.
	ZstdChunkedPositionAnnotation = "io.github.containers.zstd-chunked.manifest-position"
)

// ZstdChunkedChunkSize is the largest chunk BuildZstdChunked cuts files
// into: small, so that modest test files have several chunks.
const ZstdChunkedChunkSize = 16 << 10

// zstdChunkedEntry is one TOC entry, as the format spells its fields.
type zstdChunkedEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	Size        int64             `json:"size,omitempty"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	ModTime     *time.Time        `json:"modtime,omitempty"`
	Devmajor    int64             `json:"devMajor,omitempty"`
	Devminor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string]string `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
}

var zstdChunkedTypes = map[byte]string{
	tar.TypeReg: "reg", tar.TypeLink: "hardlink", tar.TypeChar: "char", tar.TypeBlock: "block",
	tar.TypeDir: "dir", tar.TypeFifo: "fifo", tar.TypeSymlink: "symlink",
}

// BuildZstdChunked lays the tar out as a zstd:chunked blob, written here
// from the format's description: every stretch of tar headers is a zstd
// frame, every regular file's content is cut into chunks of at most
// chunkSize bytes, each its own frame; then come skippable frames holding
// the zstd-compressed TOC (JSON), an empty tar-split and the 64-byte
// footer. Decoded as plain zstd the blob is the tar. It returns the blob
// and the layer descriptor annotations.
func BuildZstdChunked(tarData []byte, chunkSize int) ([]byte, map[string]string, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, nil, err
	}
	defer enc.Close()
	var out []byte
	frame := func(b []byte) {
		if len(b) > 0 {
			out = enc.EncodeAll(b, out)
		}
	}
	src := bytes.NewReader(tarData)
	tr := tar.NewReader(src)
	var entries []zstdChunkedEntry
	pos := int64(0) // tar bytes before this are written
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("zstd:chunked: tar: %w", err)
		}
		typ, ok := zstdChunkedTypes[hdr.Typeflag]
		if !ok {
			return nil, nil, fmt.Errorf("zstd:chunked: %q: tar type %q", hdr.Name, hdr.Typeflag)
		}
		e := zstdChunkedEntry{Type: typ, Name: hdr.Name, Linkname: hdr.Linkname, Mode: hdr.Mode,
			UID: hdr.Uid, GID: hdr.Gid, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor}
		if !hdr.ModTime.IsZero() {
			mt := hdr.ModTime
			e.ModTime = &mt
		}
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[name] = base64.StdEncoding.EncodeToString([]byte(v))
			}
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			entries = append(entries, e)
			continue
		}
		e.Size = hdr.Size
		start := src.Size() - int64(src.Len()) // the reader stands at the file's data
		frame(tarData[pos:start])
		data := tarData[start : start+hdr.Size]
		pos = start + hdr.Size
		e.Digest = digest.FromBytes(data).String()
		var chunks []zstdChunkedEntry
		for off := 0; off < len(data); off += chunkSize {
			c := data[off:min(off+chunkSize, len(data))]
			chunks = append(chunks, zstdChunkedEntry{Type: "chunk", Name: hdr.Name, Offset: int64(len(out)),
				ChunkOffset: int64(off), ChunkSize: int64(len(c)), ChunkDigest: digest.FromBytes(c).String()})
			frame(c)
		}
		e.Offset, e.EndOffset = chunks[0].Offset, int64(len(out))
		if len(chunks) > 1 {
			e.ChunkSize, e.ChunkDigest = chunks[0].ChunkSize, chunks[0].ChunkDigest
			entries = append(entries, e)
			entries = append(entries, chunks[1:]...)
		} else {
			entries = append(entries, e)
		}
	}
	frame(tarData[pos:])

	toc, err := json.Marshal(struct {
		Version int                `json:"version"`
		Entries []zstdChunkedEntry `json:"entries"`
	}{1, entries})
	if err != nil {
		return nil, nil, err
	}
	comp := enc.EncodeAll(toc, nil)
	tocOff := int64(len(out)) + 8
	out = skippableFrame(out, comp)
	splitOff := int64(len(out)) + 8
	out = skippableFrame(out, nil)
	footer := make([]byte, 64)
	for i, v := range []int64{tocOff, int64(len(comp)), int64(len(toc)), 1, splitOff, 0, 0} {
		binary.LittleEndian.PutUint64(footer[8*i:], uint64(v))
	}
	copy(footer[56:], "GNUlInUx")
	out = skippableFrame(out, footer)
	return out, map[string]string{
		ZstdChunkedChecksumAnnotation: fmt.Sprintf("sha256:%x", sha256.Sum256(comp)),
		ZstdChunkedPositionAnnotation: fmt.Sprintf("%d:%d:%d:1", tocOff, len(comp), len(toc)),
	}, nil
}

// skippableFrame appends a zstd skippable frame holding data.
func skippableFrame(out, data []byte) []byte {
	out = binary.LittleEndian.AppendUint32(out, 0x184D2A50)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...)
}
