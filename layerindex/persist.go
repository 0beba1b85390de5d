package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"io"

	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/regfs/regfs/blobio"
	"hash/crc32"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Persisted, in Options.Store (or files under Options.Dir), per blob key:
//
//	<name>.idx  the index pass's result (tar entries, checkpoints, frames)
//	<name>.toc  an eStargz blob's tail (TOC and footer)
//
// each as: 8-byte magic, uint32 version, uint64 payload length, uint32
// CRC-32C of the payload, payload (gob). A file that fails any check is
// ignored and rebuilt. Files under Dir are written to a temp file and
// renamed.
const (
	persistVersion = 4 // 4: entries carry their header offset and content sha256; 3: a hardlink keeps the data of a target replaced after it; 2: checkpoints as klauspost/compress/flate's (byte offset + bit), with a check of the output after them
	idxMagic       = "RGFSIDX\x00"
	tocMagic       = "RGFSTOC\x00"
)

// PersistVersion is the persisted (and published) index format's version.
const PersistVersion = persistVersion

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// persistedIndex is layerIndex in a gob-friendly shape.
type persistedIndex struct {
	Key         string
	Format      Format
	TarSize     int64
	Checkpoints []checkpoint
	Frames      []zstdFrame
	HasTar      bool
	Root        *Entry
	Entries     []*Entry
	TarErr      string
	NotStargz   bool
	// WindowsAfter is set in the published form only: the length of each
	// checkpoint's window, whose bytes follow the payload in checkpoint
	// order instead of sitting in Checkpoints (encodePublished).
	WindowsAfter []uint32
}

type persistedTail struct {
	Key    string
	TOCOff int64
	Tail   []byte
}

// fileName maps a blob key to a safe file name: the key with anything but
// [A-Za-z0-9._-] replaced, plus a hash of the key so distinct keys never share one.
func fileName(key string) string {
	safe := strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, key)
	if len(safe) > 150 {
		safe = safe[:150]
	}
	sum := sha256.Sum256([]byte(key))
	return safe + "-" + hex.EncodeToString(sum[:8])
}

// FileStore keeps persisted indexes by name. layercache.Cache is one: its
// disk tier, counted against its bound and evicted with the blocks.
type FileStore interface {
	// PutFile stores data under name, atomically.
	PutFile(ctx context.Context, name string, data []byte) error
	// GetFile returns what PutFile stored; the error wraps fs.ErrNotExist
	// when there is nothing (or nothing valid) under name.
	GetFile(ctx context.Context, name string) ([]byte, error)
}

// dirStore is Options.Dir as a FileStore: one file per name.
type dirStore struct{ dir string }

func (d dirStore) PutFile(_ context.Context, name string, data []byte) error {
	return writeAtomic(filepath.Join(d.dir, name), data)
}

func (d dirStore) GetFile(_ context.Context, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.dir, name))
}

func encodeFile(magic string, v any) ([]byte, error) {
	var payload bytes.Buffer
	if err := gob.NewEncoder(&payload).Encode(v); err != nil {
		return nil, err
	}
	out := make([]byte, 0, 24+payload.Len())
	out = append(out, magic...)
	out = binary.LittleEndian.AppendUint32(out, persistVersion)
	out = binary.LittleEndian.AppendUint64(out, uint64(payload.Len()))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(payload.Bytes(), castagnoli))
	return append(out, payload.Bytes()...), nil
}

var errBadIndexFile = errors.New("bad index file")

func decodeFile(data []byte, magic string, v any) error {
	if len(data) < 24 || string(data[:8]) != magic {
		return fmt.Errorf("%w: no magic", errBadIndexFile)
	}
	if ver := binary.LittleEndian.Uint32(data[8:]); ver != persistVersion {
		return fmt.Errorf("%w: version %d, want %d", errBadIndexFile, ver, persistVersion)
	}
	n := binary.LittleEndian.Uint64(data[12:])
	payload := data[24:]
	if uint64(len(payload)) != n {
		return fmt.Errorf("%w: %d payload bytes, header says %d", errBadIndexFile, len(payload), n)
	}
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(data[20:]) {
		return fmt.Errorf("%w: checksum mismatch", errBadIndexFile)
	}
	if err := gob.NewDecoder(bytes.NewReader(payload)).Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadIndexFile, err)
	}
	return nil
}

// writeAtomic writes data to path via a temp file and rename, so readers
// see the old file, the new one, or none.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op error
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadIndex reads a persisted index; (nil, nil) when there is none.
func (m *Manager) loadIndex(ctx context.Context, key string) (*layerIndex, error) {
	if m.store == nil {
		return nil, nil
	}
	data, err := m.store.GetFile(ctx, fileName(key)+".idx")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p persistedIndex
	if err := decodeFile(data, idxMagic, &p); err != nil {
		return nil, err
	}
	if p.Key != key {
		return nil, fmt.Errorf("%w: made for key %q", errBadIndexFile, p.Key)
	}
	idx := &layerIndex{Format: p.Format, TarSize: p.TarSize, Checkpoints: p.Checkpoints, Frames: p.Frames, TarErr: p.TarErr, NotStargz: p.NotStargz}
	if p.HasTar {
		idx.Tar = &Index{root: p.Root, entries: p.Entries}
	}
	return idx, nil
}

// saveIndex persists idx; failing to is not fatal (the index is rebuilt
// next time): the caller logs the error.
func (m *Manager) saveIndex(ctx context.Context, key string, idx *layerIndex) error {
	if m.store == nil {
		return nil
	}
	p := persistedIndex{Key: key, Format: idx.Format, TarSize: idx.TarSize, Checkpoints: idx.Checkpoints,
		Frames: idx.Frames, TarErr: idx.TarErr, NotStargz: idx.NotStargz}
	if idx.Tar != nil {
		p.HasTar, p.Root, p.Entries = true, idx.Tar.root, idx.Tar.entries
	}
	data, err := encodeFile(idxMagic, &p)
	if err != nil {
		return fmt.Errorf("encode index of %s: %w", key, err)
	}
	if err := m.store.PutFile(ctx, fileName(key)+".idx", data); err != nil {
		return fmt.Errorf("save index of %s: %w", key, err)
	}
	return nil
}

// loadStargzTail reads a persisted eStargz tail; the error wraps
// fs.ErrNotExist when there is none.
func (m *Manager) loadStargzTail(ctx context.Context, key string) (int64, []byte, error) {
	if m.store == nil {
		return 0, nil, fs.ErrNotExist
	}
	data, err := m.store.GetFile(ctx, fileName(key)+".toc")
	if err != nil {
		return 0, nil, err
	}
	var p persistedTail
	if err := decodeFile(data, tocMagic, &p); err != nil {
		return 0, nil, err
	}
	if p.Key != key {
		return 0, nil, fmt.Errorf("%w: made for key %q", errBadIndexFile, p.Key)
	}
	return p.TOCOff, p.Tail, nil
}

func (m *Manager) saveStargzTail(ctx context.Context, key string, tocOff int64, tail []byte) error {
	if m.store == nil {
		return nil
	}
	data, err := encodeFile(tocMagic, &persistedTail{Key: key, TOCOff: tocOff, Tail: tail})
	if err != nil {
		return fmt.Errorf("encode TOC of %s: %w", key, err)
	}
	if err := m.store.PutFile(ctx, fileName(key)+".toc", data); err != nil {
		return fmt.Errorf("save TOC of %s: %w", key, err)
	}
	return nil
}

// check refuses a loaded index that cannot describe a blob of blobSize
// bytes: the checksum catches damage, this catches a file that is
// consistent but wrong (written for other bytes under the same key, or
// crafted), wherever that is visible without reading the blob.
func (idx *layerIndex) check(blobSize int64) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", errBadIndexFile, fmt.Sprintf(format, a...))
	}
	switch idx.Format {
	case FormatTar:
		if idx.TarSize != blobSize {
			return bad("an uncompressed tar of %d bytes in a blob of %d", idx.TarSize, blobSize)
		}
	case FormatGzip, FormatZstd:
	default:
		return bad("format %v", idx.Format)
	}
	if idx.TarSize < 0 {
		return bad("tar size %d", idx.TarSize)
	}
	if len(idx.Checkpoints) > 0 && idx.Format != FormatGzip || len(idx.Frames) > 0 && idx.Format != FormatZstd {
		return bad("restart points of another format")
	}
	var prev int64
	for i, cp := range idx.Checkpoints {
		want := uint32(min(checkLen, idx.TarSize-cp.UOff))
		if cp.UOff <= prev || cp.UOff > idx.TarSize || cp.COff < 0 || cp.COff >= blobSize || cp.Bit > 7 ||
			len(cp.Window) > windowSize || cp.CheckLen != want {
			return bad("checkpoint %d out of place", i)
		}
		prev = cp.UOff
	}
	var prevC int64
	for i, fr := range idx.Frames {
		if fr.UOff < prev || fr.COff < prevC || fr.COff >= blobSize || fr.UOff > idx.TarSize || i > 0 && fr.COff == prevC {
			return bad("zstd frame %d out of place", i)
		}
		prev, prevC = fr.UOff, fr.COff
	}
	if idx.Tar == nil {
		return nil
	}
	if r := idx.Tar.root; r != nil && r.Type != tar.TypeDir {
		return bad("root entry of type %q", r.Type)
	}
	seen := make(map[string]bool, len(idx.Tar.entries))
	for _, e := range idx.Tar.entries {
		if e == nil || e.Name == "" || cleanName(e.Name) != e.Name || seen[e.Name] || e.Size < 0 ||
			e.Offset < -1 || e.Offset >= 0 && e.Offset > idx.TarSize-e.Size {
			return bad("entry out of place")
		}
		seen[e.Name] = true
	}
	for _, e := range idx.Tar.entries {
		if d := path.Dir(e.Name); d != "." && !seen[d] {
			return bad("entry %q without its parent directory", e.Name)
		}
	}
	return nil
}

// MaxPublishedIndexSize bounds a published index (PublishedIndex's bytes,
// as read back from a registry): a gzip layer of 10 GiB of tar with the
// default checkpoint spacing needs about 160 MiB of windows.
const MaxPublishedIndexSize = 256 << 20

// encodePublished is idx as PublishedIndex publishes it: the persisted
// format, made for the blob digest key (not a cache's store key), with the
// checkpoint windows (most of its bytes) moved after the payload, so that a
// reader fetches the payload and then only the windows its reads start at.
func encodePublished(key string, idx *layerIndex) ([]byte, error) {
	if idx.Tar == nil {
		return nil, fmt.Errorf("layer %s: no tar index to publish: %s", key, idx.TarErr)
	}
	p := persistedIndex{Key: key, Format: idx.Format, TarSize: idx.TarSize, NotStargz: idx.NotStargz,
		HasTar: true, Root: idx.Tar.root, Entries: idx.Tar.entries,
		Checkpoints: make([]checkpoint, len(idx.Checkpoints)), WindowsAfter: make([]uint32, len(idx.Checkpoints))}
	var windows []byte
	for i, cp := range idx.Checkpoints {
		p.WindowsAfter[i] = uint32(len(cp.Window))
		windows = append(windows, cp.Window...)
		cp.Window = nil
		p.Checkpoints[i] = cp
	}
	out, err := encodeFile(idxMagic, &p)
	if err != nil {
		return nil, err
	}
	return append(out, windows...), nil
}

// publishedHeaderSize is what a reader of a published index reads first
// (or more, publishedFirstRead): magic, version, payload length, checksum.
const publishedHeaderSize = 24

// publishedFirstRead is the first read of a published index: the header
// and, for most layers, the whole payload with it.
const publishedFirstRead = 256 << 10

// readPublished reads the payload of the published index in src (a blob of
// the registry, read in ranges) and parses it for the gzip blob key of
// blobSize bytes; the windows stay in src, at the offsets returned.
func readPublished(ctx context.Context, src blobio.ReaderAt, key string, blobSize int64, maxEntries int) (*layerIndex, []int64, error) {
	size := src.Size()
	if size < publishedHeaderSize || size > MaxPublishedIndexSize {
		return nil, nil, fmt.Errorf("%w: %d bytes", errBadIndexFile, size)
	}
	buf := make([]byte, min(size, publishedFirstRead))
	if err := readFull(ctx, src, buf, 0); err != nil {
		return nil, nil, err
	}
	n := binary.LittleEndian.Uint64(buf[12:])
	if n > uint64(size-publishedHeaderSize) {
		return nil, nil, fmt.Errorf("%w: payload of %d bytes in %d", errBadIndexFile, n, size)
	}
	end := publishedHeaderSize + int64(n)
	if end > int64(len(buf)) {
		more := make([]byte, end)
		copy(more, buf)
		if err := readFull(ctx, src, more[len(buf):], int64(len(buf))); err != nil {
			return nil, nil, err
		}
		buf = more
	}
	return parsePublished(buf[:end], size, key, blobSize, maxEntries)
}

// readFull fills p from src at off.
func readFull(ctx context.Context, src blobio.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(ctx, p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read published index at %d: %w", off, err)
}

// parsePublished parses the header and payload of a published index of
// size bytes made for the gzip blob key of blobSize bytes, and returns it
// with the offset of each checkpoint's window in the published index. It
// is untrusted input: besides the persisted file's checks (check), every
// entry a reader may open must say where its headers start and, for a
// regular file, its content's sha256, so each open can be checked against
// the tar itself (publishedFile).
func parsePublished(data []byte, size int64, key string, blobSize int64, maxEntries int) (*layerIndex, []int64, error) {
	if size > MaxPublishedIndexSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, more than %d", errBadIndexFile, size, MaxPublishedIndexSize)
	}
	var p persistedIndex
	if err := decodeFile(data, idxMagic, &p); err != nil {
		return nil, nil, err
	}
	if p.Key != key {
		return nil, nil, fmt.Errorf("%w: made for %q", errBadIndexFile, p.Key)
	}
	if p.Format != FormatGzip || !p.HasTar || len(p.Frames) > 0 {
		return nil, nil, fmt.Errorf("%w: not a gzip layer's tar index", errBadIndexFile)
	}
	if len(p.Entries) > maxEntries {
		return nil, nil, fmt.Errorf("%w: %d entries, more than %d", errBadIndexFile, len(p.Entries), maxEntries)
	}
	if len(p.WindowsAfter) != len(p.Checkpoints) {
		return nil, nil, fmt.Errorf("%w: %d windows for %d checkpoints", errBadIndexFile, len(p.WindowsAfter), len(p.Checkpoints))
	}
	offs := make([]int64, len(p.Checkpoints))
	at := int64(len(data))
	for i, n := range p.WindowsAfter {
		if n > windowSize || int64(n) > p.Checkpoints[i].UOff || len(p.Checkpoints[i].Window) > 0 {
			return nil, nil, fmt.Errorf("%w: window %d of %d bytes", errBadIndexFile, i, n)
		}
		offs[i] = at
		at += int64(n)
	}
	if at != size {
		return nil, nil, fmt.Errorf("%w: %d bytes of windows in %d after the payload", errBadIndexFile, at-int64(len(data)), size-int64(len(data)))
	}
	idx := &layerIndex{Format: p.Format, TarSize: p.TarSize, Checkpoints: p.Checkpoints, NotStargz: p.NotStargz,
		Tar: &Index{root: p.Root, entries: p.Entries}}
	if err := idx.check(blobSize); err != nil {
		return nil, nil, err
	}
	for _, e := range p.Entries {
		if e.HeaderName != "" && cleanName(e.HeaderName) != e.HeaderName {
			return nil, nil, fmt.Errorf("%w: entry %q: header name %q", errBadIndexFile, e.Name, e.HeaderName)
		}
		if e.Type != tar.TypeReg && e.Type != tar.TypeLink || e.Offset < 0 {
			continue // never opened: nothing to check it against
		}
		if e.HeaderOff < 0 || e.HeaderOff%blockSize != 0 || e.HeaderOff > e.Offset-blockSize {
			return nil, nil, fmt.Errorf("%w: entry %q: headers at %d, data at %d", errBadIndexFile, e.Name, e.HeaderOff, e.Offset)
		}
		if e.Type == tar.TypeReg && e.ContentSHA256 == [32]byte{} {
			return nil, nil, fmt.Errorf("%w: entry %q: no content digest", errBadIndexFile, e.Name)
		}
	}
	for i := range p.WindowsAfter {
		// A decode restarts with the window fetched (publishedIndex.window);
		// until then its length is all there is.
		p.Checkpoints[i].Window = nil
	}
	return idx, offs, nil
}
