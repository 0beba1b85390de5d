package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/regfs/regfs/blobio"
)

// The layer descriptor annotations of a zstd:chunked layer.
const (
	// ZstdChunkedChecksumAnnotation is the sha256 digest of the compressed TOC.
	ZstdChunkedChecksumAnnotation = "io.github.containers.zstd-chunked.manifest-checksum"
	// ZstdChunkedPositionAnnotation locates the compressed TOC in the blob:
	// "offset:length:uncompressed length:type" (type 1).
	ZstdChunkedPositionAnnotation = "io.github.containers.zstd-chunked.manifest-position"
)

const (
	zstdChunkedFooterSize = 64 // the footer's bytes, the blob's last, inside a skippable frame
	zstdChunkedTOCType    = 1  // the one TOC type there is: CRFS-like JSON
	maxZstdChunkedTOC     = 64 << 20
	// maxZstdChunk bounds a chunk decoded in memory. A file with a larger
	// chunk (the format sets no bound) is read through the tar stream.
	maxZstdChunk = 8 << 20
	tocChunkCost = 160 // estimated memory of one tocChunk, its digest included
)

var zstdChunkedMagic = []byte("GNUlInUx")

// zstdChunkedLayer is a zstd:chunked blob opened through its TOC.
type zstdChunkedLayer struct {
	store  *chunkStore
	index  *Index
	chunks map[string][]tocChunk // regular file → its chunks, by FileOff
	large  map[string]bool       // regular files with a chunk over maxZstdChunk
}

// zstdChunkedState remembers whether a layer is zstd:chunked, once known.
type zstdChunkedState struct {
	zc     retryOnce[*zstdChunkedLayer] // nil once known: not zstd:chunked
	opened atomic.Bool                  // the TOC is read: the layer's index needs no pass
}

// zstdChunkedPos is where the compressed TOC lies in the blob.
type zstdChunkedPos struct {
	off, size, usize int64
}

// zstdChunked returns the zstd:chunked view of the layer, or nil if the
// blob is not zstd:chunked. Without the position annotation it costs a
// read of the footer (64 bytes), then one of the TOC. A failure is not
// kept: the next call checks again.
func (l *Layer) zstdChunked(ctx context.Context) (*zstdChunkedLayer, error) {
	return l.zcState.zc.get(ctx, l.checkZstdChunked)
}

func (l *Layer) checkZstdChunked(ctx context.Context) (*zstdChunkedLayer, error) {
	pos, found, err := l.zstdChunkedPos(ctx)
	if err != nil || !found {
		return nil, err
	}
	fail := func(err error) (*zstdChunkedLayer, error) {
		return nil, fmt.Errorf("layer %s: zstd:chunked: %w", l.key, err)
	}
	comp := make([]byte, pos.size)
	if _, err := l.blob.ReadExact(ctx, comp, pos.off); err != nil && !errors.Is(err, io.EOF) {
		return fail(fmt.Errorf("read TOC: %w", err))
	}
	if want := l.lopts.ZstdChunkedChecksum; want != "" {
		d, err := digest.Parse(want)
		if err != nil {
			return fail(fmt.Errorf("TOC checksum annotation %q: %w", want, err))
		}
		if got := d.Algorithm().FromBytes(comp); got != d {
			return fail(fmt.Errorf("verify TOC: %w: TOC is %s, the annotation says %s", errCorrupt, got, d))
		}
	}
	toc, err := decodeZstdChunkedTOC(comp, pos.usize)
	if err != nil {
		return fail(err)
	}
	zc := &zstdChunkedLayer{store: &chunkStore{src: l.source(), cache: l.m.chunks, decode: decodeZstdChunk}}
	// A file's frames lie before the TOC's skippable frame (8 bytes of header).
	if err := zc.buildIndex(toc, pos.off-8, l.m.opts.MaxEntries); err != nil {
		return fail(err)
	}
	n := 0
	for _, cs := range zc.chunks {
		n += len(cs)
	}
	// The layer keeps its TOC index for good: charged, never given back.
	if err := l.m.charge(tarIndexCost(zc.index)+int64(n)*tocChunkCost, "zstd:chunked TOC of layer "+l.key); err != nil {
		l.logBudgetOnce(err)
		return nil, err
	}
	l.zcState.opened.Store(true)
	return zc, nil
}

// zstdChunkedPos finds the TOC: from the position annotation if the
// layer has one, else from the footer. found is false for a blob that is
// not zstd:chunked.
func (l *Layer) zstdChunkedPos(ctx context.Context) (pos zstdChunkedPos, found bool, err error) {
	size := l.blob.Size()
	if a := l.lopts.ZstdChunkedPosition; a != "" {
		pos, err := parseZstdChunkedPosition(a, size)
		if err != nil {
			return pos, false, fmt.Errorf("layer %s: zstd:chunked position annotation %q: %w", l.key, a, err)
		}
		return pos, true, nil
	}
	// A layer with a pass's index (persisted) reads through it: no footer read.
	if idx := l.loadedIndex(ctx); idx != nil {
		return pos, false, nil
	}
	if f, err := l.Format(ctx); err != nil || f != FormatZstd {
		return pos, false, err
	}
	if size < zstdChunkedFooterSize {
		return pos, false, nil
	}
	footer := make([]byte, zstdChunkedFooterSize)
	if _, err := l.blob.ReadExact(ctx, footer, size-zstdChunkedFooterSize); err != nil && !errors.Is(err, io.EOF) {
		return pos, false, fmt.Errorf("layer %s: read zstd:chunked footer: %w", l.key, err)
	}
	pos, found, err = parseZstdChunkedFooter(footer, size)
	if err != nil {
		return pos, false, fmt.Errorf("layer %s: zstd:chunked footer: %w", l.key, err)
	}
	return pos, found, nil
}

// parseZstdChunkedFooter reads the footer: little-endian uint64s TOC
// offset, compressed and uncompressed length, type, then tar-split's three
// (unused here), then the magic. found is false without the magic.
func parseZstdChunkedFooter(footer []byte, blobSize int64) (zstdChunkedPos, bool, error) {
	if len(footer) != zstdChunkedFooterSize || !bytes.Equal(footer[56:], zstdChunkedMagic) {
		return zstdChunkedPos{}, false, nil
	}
	var v [4]uint64
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(footer[8*i:])
	}
	pos, err := checkZstdChunkedPos(v, blobSize)
	return pos, err == nil, err
}

// parseZstdChunkedPosition reads the position annotation.
func parseZstdChunkedPosition(a string, blobSize int64) (zstdChunkedPos, error) {
	parts := strings.Split(a, ":")
	if len(parts) != 4 {
		return zstdChunkedPos{}, errors.New("want offset:length:uncompressed length:type")
	}
	var v [4]uint64
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return zstdChunkedPos{}, err
		}
		v[i] = n
	}
	return checkZstdChunkedPos(v, blobSize)
}

// checkZstdChunkedPos bounds a TOC position (offset, length, uncompressed
// length, type) to the blob and to what this package reads.
func checkZstdChunkedPos(v [4]uint64, blobSize int64) (zstdChunkedPos, error) {
	off, size, usize, typ := v[0], v[1], v[2], v[3]
	switch {
	case typ != zstdChunkedTOCType:
		return zstdChunkedPos{}, fmt.Errorf("TOC type %d, want %d", typ, zstdChunkedTOCType)
	case off < 8 || size == 0 || off > uint64(blobSize) || size > uint64(blobSize)-off:
		return zstdChunkedPos{}, fmt.Errorf("TOC at %d, %d bytes: outside the blob of %d", off, size, blobSize)
	case usize == 0 || usize > maxZstdChunkedTOC:
		return zstdChunkedPos{}, fmt.Errorf("TOC of %d bytes uncompressed: want 1 to %d", usize, maxZstdChunkedTOC)
	}
	return zstdChunkedPos{off: int64(off), size: int64(size), usize: int64(usize)}, nil
}

// zstdChunkedTOC is the TOC JSON: containers/storage's field names.
type zstdChunkedTOC struct {
	Version int                   `json:"version"`
	Entries []zstdChunkedTOCEntry `json:"entries"`
}

type zstdChunkedTOCEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName"`
	Mode        int64             `json:"mode"`
	Size        int64             `json:"size"`
	UID         int               `json:"uid"`
	GID         int               `json:"gid"`
	ModTime     *time.Time        `json:"modtime"`
	Devmajor    int64             `json:"devMajor"`
	Devminor    int64             `json:"devMinor"`
	Xattrs      map[string]string `json:"xattrs"` // values base64
	Digest      string            `json:"digest"` // of the whole file
	Offset      int64             `json:"offset"` // blob offset of the (first) chunk's frame
	EndOffset   int64             `json:"endOffset"`
	ChunkSize   int64             `json:"chunkSize"`
	ChunkOffset int64             `json:"chunkOffset"`
	ChunkDigest string            `json:"chunkDigest"`
	ChunkType   string            `json:"chunkType"`
}

// decodeZstdChunkedTOC decompresses the TOC, which must be exactly usize
// bytes, and parses its JSON.
func decodeZstdChunkedTOC(comp []byte, usize int64) (*zstdChunkedTOC, error) {
	dec, err := zstd.NewReader(bytes.NewReader(comp), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdChunkedTOC))
	if err != nil {
		return nil, fmt.Errorf("TOC: %w", err)
	}
	defer dec.Close()
	js, err := io.ReadAll(io.LimitReader(dec, usize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress TOC: %w: %w", errCorrupt, err)
	}
	if int64(len(js)) != usize {
		return nil, fmt.Errorf("decompress TOC: %w: more than %d bytes, or fewer", errCorrupt, usize)
	}
	toc := new(zstdChunkedTOC)
	if err := json.Unmarshal(js, toc); err != nil {
		return nil, fmt.Errorf("TOC JSON: %w", err)
	}
	if toc.Version != 1 {
		return nil, fmt.Errorf("TOC version %d, want 1", toc.Version)
	}
	return toc, nil
}

// buildIndex turns the TOC entries, in tar order, into the Index by the
// same rules as a tar (a later entry replaces an earlier one), and notes
// every regular file's chunks: a file of one chunk is its entry's frame
// [Offset, EndOffset) with the file's digest; a file of several lists
// them as its entry's Chunk* fields then "chunk" entries, each ending
// where the next starts and the last at the file's EndOffset. Files'
// frames must lie in [0, dataEnd).
func (zc *zstdChunkedLayer) buildIndex(toc *zstdChunkedTOC, dataEnd int64, maxEntries int) error {
	b := newIndexBuilder(maxEntries)
	zc.chunks, zc.large = map[string][]tocChunk{}, map[string]bool{}
	owner := map[string]*Entry{}        // name → the regular file its chunks are
	replaced := map[*Entry][]tocChunk{} // the chunks of regular files replaced since
	var file *zstdChunkedTOCEntry       // the regular file the next "chunk" entries belong to
	var cur []tocChunk                  // its chunks so far
	var fileName string
	if len(toc.Entries) > 16*maxEntries {
		return fmt.Errorf("TOC of %d entries: more than %d", len(toc.Entries), 16*maxEntries)
	}
	finish := func() error {
		if file == nil {
			return nil
		}
		cs, err := checkZstdChunks(cur, file, dataEnd)
		if err != nil {
			return fmt.Errorf("TOC entry %q: %w", fileName, err)
		}
		zc.chunks[fileName] = cs
		for _, c := range cs {
			if c.Size > maxZstdChunk {
				zc.large[fileName] = true
			}
		}
		file, cur = nil, nil
		return nil
	}
	addChunk := func(te *zstdChunkedTOCEntry, size int64, ds string) error {
		d, err := digest.Parse(ds)
		if err != nil {
			return fmt.Errorf("TOC entry %q: chunk at file offset %d: digest: %w", fileName, te.ChunkOffset, err)
		}
		cur = append(cur, tocChunk{Offset: te.Offset, FileOff: te.ChunkOffset, Size: size, Digest: d})
		return nil
	}
	for i := range toc.Entries {
		te := &toc.Entries[i]
		if te.Type == "chunk" {
			if file == nil || cleanName(te.Name) != fileName {
				return fmt.Errorf("TOC entry %d: a chunk of %q with no regular file of that name before it", i, te.Name)
			}
			if err := addChunk(te, te.ChunkSize, te.ChunkDigest); err != nil {
				return err
			}
			continue
		}
		if err := finish(); err != nil {
			return err
		}
		e, err := zstdChunkedEntry(te)
		if err != nil {
			return err
		}
		delete(zc.large, e.Name) // a later entry for a path replaces the earlier one
		fileName = e.Name
		if te.Type == "reg" {
			if prev := owner[e.Name]; prev != nil {
				replaced[prev] = zc.chunks[e.Name] // a hardlink to prev may keep them (movedData)
			}
			owner[e.Name] = e
			delete(zc.chunks, e.Name)
			file = te
			var err error
			switch {
			case te.Size == 0:
			case te.ChunkSize > 0:
				err = addChunk(te, te.ChunkSize, te.ChunkDigest)
			default:
				err = addChunk(te, te.Size, te.Digest)
			}
			if err != nil {
				return err
			}
		}
		if err := b.addEntry(e); err != nil {
			return fmt.Errorf("TOC entry %q: %w", te.Name, err)
		}
	}
	if err := finish(); err != nil {
		return err
	}
	zc.index = b.finish()
	for _, mv := range b.moved {
		cs, ok := replaced[mv.from]
		if !ok && owner[mv.from.Name] == mv.from {
			cs = zc.chunks[mv.from.Name] // no regular file took its name since
		}
		zc.chunks[mv.to.Name] = cs
		for _, c := range cs {
			if c.Size > maxZstdChunk {
				zc.large[mv.to.Name] = true
			}
		}
	}
	return nil
}

// checkZstdChunks completes a file's chunks with their ends and checks
// that they tile the file and lie inside [0, dataEnd), each compressed
// range no larger than its content could take.
func checkZstdChunks(cs []tocChunk, file *zstdChunkedTOCEntry, dataEnd int64) ([]tocChunk, error) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].FileOff < cs[j].FileOff })
	var at int64
	for i := range cs {
		c := &cs[i]
		c.End = file.EndOffset
		if i+1 < len(cs) {
			c.End = cs[i+1].Offset
		}
		switch {
		case c.FileOff != at || c.Size <= 0 || c.Size > file.Size-at:
			return nil, fmt.Errorf("chunk of %d bytes at file offset %d: the chunks do not tile the file's %d bytes", c.Size, c.FileOff, file.Size)
		case c.Offset < 0 || c.End <= c.Offset || c.End > dataEnd:
			return nil, fmt.Errorf("chunk at file offset %d: frames [%d, %d) outside the blob's data (%d bytes)", c.FileOff, c.Offset, c.End, dataEnd)
		case c.End-c.Offset > c.Size+c.Size/64+4096:
			return nil, fmt.Errorf("chunk at file offset %d: %d bytes compressed for %d", c.FileOff, c.End-c.Offset, c.Size)
		}
		at += c.Size
	}
	if at != file.Size {
		return nil, fmt.Errorf("chunks hold %d bytes of the file's %d", at, file.Size)
	}
	return cs, nil
}

// zstdChunkedEntry is the Entry for a TOC entry other than "chunk".
func zstdChunkedEntry(te *zstdChunkedTOCEntry) (*Entry, error) {
	h := tar.Header{Mode: te.Mode}
	switch te.Type {
	case "dir":
		h.Typeflag = tar.TypeDir
	case "reg":
		h.Typeflag = tar.TypeReg
	case "symlink":
		h.Typeflag = tar.TypeSymlink
	case "hardlink":
		h.Typeflag = tar.TypeLink
	case "char":
		h.Typeflag = tar.TypeChar
	case "block":
		h.Typeflag = tar.TypeBlock
	case "fifo":
		h.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("TOC entry %q: unknown type %q", te.Name, te.Type)
	}
	e := &Entry{
		Name:     cleanName(te.Name),
		Type:     h.Typeflag,
		Mode:     h.FileInfo().Mode(),
		UID:      te.UID,
		GID:      te.GID,
		Linkname: te.Linkname,
		Devmajor: te.Devmajor,
		Devminor: te.Devminor,
		Offset:   -1,
		ModTime:  time.Unix(0, 0), // the TOC leaves out a zero mtime, which a tar header holds as 0
	}
	if te.ModTime != nil {
		e.ModTime = *te.ModTime
	}
	switch te.Type {
	case "reg":
		if te.Size < 0 {
			return nil, fmt.Errorf("TOC entry %q: size %d", te.Name, te.Size)
		}
		e.Size = te.Size
	case "hardlink":
		e.Linkname = cleanName(te.Linkname)
	}
	for k, v := range te.Xattrs {
		val, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %q: xattr %q: %w", te.Name, k, err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string]string{}
		}
		e.Xattrs[k] = string(val)
	}
	return e, nil
}

// openFile reads a regular file chunk by chunk, each checked against its
// TOC digest; nil for a file with a chunk too large to hold in memory.
func (zc *zstdChunkedLayer) openFile(e *Entry) blobio.ReaderAt {
	if zc.large[e.Name] {
		return nil
	}
	return zc.store.openFile(e.Name, e.Size, zc.chunks[e.Name])
}

// zstdChunkDecoder decodes chunks; safe for concurrent DecodeAll calls.
var zstdChunkDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(4), zstd.WithDecoderMaxMemory(2*maxZstdChunk))
})

// decodeZstdChunk decodes chunk c from comp, its frames.
func decodeZstdChunk(comp []byte, c tocChunk) ([]byte, error) {
	dec, err := zstdChunkDecoder()
	if err != nil {
		return nil, err
	}
	return dec.DecodeAll(comp, make([]byte, 0, c.Size))
}

// openLargeZstdFile reads t, a zstd:chunked file with a chunk too large to
// decode in memory, through the tar stream (the index pass's entry of the
// same name, which must agree with the TOC's).
func (l *Layer) openLargeZstdFile(ctx context.Context, t *Entry) (blobio.ReaderAt, error) {
	idx, err := l.index(ctx)
	if err != nil {
		return nil, err
	}
	if idx.Tar == nil {
		return nil, fmt.Errorf("layer %s: open %q: %w", l.key, t.Name, ErrBadTar)
	}
	pe, ok := idx.Tar.Lookup(t.Name)
	if ok {
		pe, err = idx.Tar.Resolve(pe)
	}
	if !ok || err != nil || pe.Type != tar.TypeReg || pe.Size != t.Size || pe.Offset < 0 {
		return nil, fmt.Errorf("layer %s: open %q: %w: the tar stream does not hold the file the TOC lists", l.key, t.Name, errCorrupt)
	}
	return &fileReader{l: l, idx: idx, off: pe.Offset, size: pe.Size}, nil
}
