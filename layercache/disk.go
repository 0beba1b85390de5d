package layercache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/sirupsen/logrus"
)

// Disk layout under Options.DiskDir, one file per block (why:
// docs/design/layercache.md):
//
//	blocks/<escaped key>/<block size>_<index>.blk   block data + trailer
//	files/<escaped name>                            PutFile data + trailer
//	digests/<escaped digest>.<block size>           verified block states (trust.go) + trailer
//	.../.tmp-*                                      files being written
//
// Every file ends with a 16-byte trailer: "RGFSBLK2", the data length
// (uint32 LE) and the CRC-32C of the data followed by the file's path
// relative to DiskDir (uint32 LE), which binds the data to its blob key,
// block size and index: a file moved to another name (a block swapped with
// its neighbour) fails like a torn one. A file whose size, magic, length or
// checksum disagrees is removed and never served. The layout's version is
// stamped by an empty file (diskversion.go).
const (
	blocksDirName = "blocks"
	filesDirName  = "files"
	statesDirName = "digests"
	tmpPrefix     = ".tmp-"
	blockExt      = ".blk"
	trailerSize   = 16
	trailerMagic  = "RGFSBLK2"

	// staleTempAge: temp files older than this belong to a dead writer.
	staleTempAge = time.Hour
	// touchInterval: how stale a file's mtime may get before a hit
	// refreshes it, so other processes and restarts see recency.
	touchInterval = time.Minute
	// rescanInterval: at most this often, a write that pushes the tier over
	// its bound rescans the directory to learn what other processes wrote
	// and evicted.
	rescanInterval = time.Minute
	// maxNameLen: longer escaped names are replaced by "~" + sha256(name).
	maxNameLen = 200
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type diskEntry struct {
	size  int64
	mtime time.Time
}

// diskTier is the on-disk block store. Files are the truth; the in-memory
// LRU (relative path → size, recency) only orders eviction and counts bytes.
type diskTier struct {
	dir   string
	limit int64
	log   logrus.FieldLogger
	dirs  sync.Map // directories known to exist

	mu       sync.Mutex
	lru      *simplelru.LRU[string, diskEntry]
	bytes    int64
	lastScan time.Time
	scanning bool

	hits, misses, evictions, writes, writeErrors, corrupt atomic.Int64
}

func openDiskTier(dir string, limit int64, log logrus.FieldLogger) (*diskTier, error) {
	if err := checkLayout(dir, log); err != nil {
		return nil, err
	}
	for _, sub := range []string{blocksDirName, filesDirName} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("layercache: disk tier: %w", err)
		}
	}
	d := &diskTier{dir: dir, limit: limit, log: log}
	d.lru, _ = simplelru.NewLRU[string, diskEntry](math.MaxInt, nil)
	start := time.Now()
	found, err := scanDisk(dir, true)
	if err != nil {
		return nil, fmt.Errorf("layercache: disk tier: %w", err)
	}
	// Oldest first, so the most recently used ends up most recent.
	sort.Slice(found, func(i, j int) bool { return found[i].mtime.Before(found[j].mtime) })
	d.mu.Lock()
	for _, f := range found {
		d.lru.Add(f.rel, diskEntry{size: f.size, mtime: f.mtime})
		d.bytes += f.size
	}
	d.lastScan = start
	victims := d.evictLocked()
	d.mu.Unlock()
	d.remove(victims)
	return d, nil
}

type scannedFile struct {
	rel   string
	size  int64
	mtime time.Time
}

// scanDisk lists the tier's data files; with removeStale it deletes temp
// files left by dead writers.
func scanDisk(dir string, removeStale bool) ([]scannedFile, error) {
	var out []scannedFile
	add := func(rel string, e fs.DirEntry) {
		info, err := e.Info()
		if err != nil {
			return // vanished meanwhile
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if removeStale && time.Since(info.ModTime()) > staleTempAge {
				_ = os.Remove(filepath.Join(dir, rel))
			}
			return
		}
		out = append(out, scannedFile{rel: rel, size: info.Size(), mtime: info.ModTime()})
	}
	blobs, err := os.ReadDir(filepath.Join(dir, blocksDirName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, bd := range blobs {
		if !bd.IsDir() {
			continue
		}
		rel := filepath.Join(blocksDirName, bd.Name())
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			continue // evicted and removed meanwhile
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				add(filepath.Join(rel, e.Name()), e)
			}
		}
	}
	files, err := os.ReadDir(filepath.Join(dir, filesDirName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range files {
		if e.Type().IsRegular() {
			add(filepath.Join(filesDirName, e.Name()), e)
		}
	}
	return out, nil
}

func blockRel(key string, bs, index int64) string {
	return filepath.Join(blocksDirName, escapeName(key), strconv.FormatInt(bs, 10)+"_"+strconv.FormatInt(index, 10)+blockExt)
}

func fileRel(name string) string {
	return filepath.Join(filesDirName, escapeName(name))
}

// knowsBlock reports whether the index knows block index of key (blocks
// another Cache or process wrote since the last scan are not known).
func (d *diskTier) knowsBlock(key string, bs, index int64) bool {
	rel := blockRel(key, bs, index)
	d.mu.Lock()
	ok := d.lru.Contains(rel)
	d.mu.Unlock()
	return ok
}

// hasBlock reports whether block index of key is on disk, asking the file
// system when the index does not know it: a stream stops there and lets the
// block be read from disk (where it is verified).
func (d *diskTier) hasBlock(key string, bs, index int64) bool {
	if d.knowsBlock(key, bs, index) {
		return true
	}
	_, err := os.Stat(filepath.Join(d.dir, blockRel(key, bs, index)))
	return err == nil
}

// readBlock returns block index of key if a whole, verified copy is on
// disk, else nil.
func (d *diskTier) readBlock(key string, bs, index, length int64) []byte {
	data, err := d.read(blockRel(key, bs, index), length)
	if err != nil {
		d.misses.Add(1)
		return nil
	}
	d.hits.Add(1)
	return data
}

// readBlockIfThere is readBlock, or readBlockInto when dst is not nil,
// for a copy that may well not be there: its absence is not a miss.
func (d *diskTier) readBlockIfThere(key string, bs, index, length int64, dst []byte) ([]byte, bool) {
	rel := blockRel(key, bs, index)
	var err error
	if dst == nil {
		dst, err = d.read(rel, length)
	} else {
		err = d.readInto(rel, dst)
	}
	switch {
	case err == nil:
		d.hits.Add(1)
		return dst, true
	case !errors.Is(err, fs.ErrNotExist):
		d.misses.Add(1)
	}
	return nil, false
}

// writeStates stores the verified block states of dgst at block size bs,
// outside the bound and the LRU (108 bytes a block for sha256), kept as long as the
// tier (Clear removes them).
func (d *diskTier) writeStates(dgst string, bs int64, data []byte) error {
	rel := statesRel(dgst, bs)
	w, err := d.create(rel)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// readStates returns what writeStates stored, if it is there, whole and of
// want bytes.
func (d *diskTier) readStates(dgst string, bs, want int64) ([]byte, error) {
	rel := statesRel(dgst, bs)
	f, err := os.Open(filepath.Join(d.dir, rel))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readVerified(f, want, rel)
}

func statesRel(dgst string, bs int64) string {
	return filepath.Join(statesDirName, escapeName(dgst)+"."+strconv.FormatInt(bs, 10))
}

// readBlockInto fills dst with block index of key if a whole, verified
// copy of exactly len(dst) bytes is on disk, and reports whether it did.
// On false, dst holds garbage.
func (d *diskTier) readBlockInto(key string, bs, index int64, dst []byte) bool {
	if err := d.readInto(blockRel(key, bs, index), dst); err != nil {
		d.misses.Add(1)
		return false
	}
	d.hits.Add(1)
	return true
}

// readInto fills dst with the verified data of rel, which must be exactly
// len(dst) bytes. A file that fails verification is removed.
func (d *diskTier) readInto(rel string, dst []byte) error {
	return d.readFile(rel, func(f *os.File) (int64, error) {
		return int64(len(dst)), readVerifiedInto(f, dst, rel)
	})
}

// read returns the verified data of rel; want < 0 accepts any length.
// A file that fails verification is removed.
func (d *diskTier) read(rel string, want int64) ([]byte, error) {
	var data []byte
	err := d.readFile(rel, func(f *os.File) (int64, error) {
		if want >= 0 && want <= math.MaxUint32 {
			data = make([]byte, want) // only once the file is there
			return want, readVerifiedInto(f, data, rel)
		}
		var err error
		data, err = readVerified(f, want, rel)
		return int64(len(data)), err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// readFile opens rel and lets fill read and verify it (returning the data
// length); a failure is handled as failed does, a success refreshes the
// file's recency.
func (d *diskTier) readFile(rel string, fill func(f *os.File) (int64, error)) error {
	path := filepath.Join(d.dir, rel)
	f, err := os.Open(path)
	var n int64
	if err == nil {
		n, err = fill(f)
		f.Close()
	}
	if err != nil {
		d.failed(rel, path, err)
		return err
	}
	d.touch(rel, n+trailerSize)
	return nil
}

// failed handles a failed read of rel: a bad file is counted and removed;
// either way the index forgets it.
func (d *diskTier) failed(rel, path string, err error) {
	switch {
	case errors.Is(err, errBadFile):
		d.corrupt.Add(1)
		d.log.WithError(err).Warnf("layercache: removing bad disk cache file %s", rel)
		_ = os.Remove(path)
	case !errors.Is(err, fs.ErrNotExist):
		d.log.WithError(err).Warnf("layercache: disk read %s", rel)
	}
	d.forget(rel)
}

var errBadFile = errors.New("bad cache file")

func readVerified(f *os.File, want int64, rel string) ([]byte, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := info.Size() - trailerSize
	if n < 0 || n > math.MaxUint32 || (want >= 0 && n != want) {
		return nil, fmt.Errorf("%w: size %d, want %d+%d", errBadFile, info.Size(), want, trailerSize)
	}
	data := make([]byte, n)
	if err := readVerifiedInto(f, data, rel); err != nil {
		return nil, err
	}
	return data, nil
}

// readVerifiedInto reads f, which must hold exactly len(dst) bytes of data
// and their trailer, into dst: two reads (data, then trailer and the end of
// the file) instead of a stat and a read of unknown size. The trailer must
// bind the data to rel, its place in the tier.
func readVerifiedInto(f *os.File, dst []byte, rel string) error {
	n := len(dst)
	if m, err := f.ReadAt(dst, 0); m != n {
		return fmt.Errorf("%w: %d data bytes, want %d: %v", errBadFile, m, n, err)
	}
	// One byte more than the trailer: the file must end right after it.
	var tr [trailerSize + 1]byte
	m, err := f.ReadAt(tr[:], int64(n))
	if m != trailerSize || err != io.EOF {
		return fmt.Errorf("%w: size %d, want %d+%d", errBadFile, int64(n)+int64(m), n, trailerSize)
	}
	if want := makeTrailer(dst, rel); [trailerSize]byte(tr[:trailerSize]) != want {
		return fmt.Errorf("%w: trailer does not match the data and its place", errBadFile)
	}
	return nil
}

// removeBlock deletes block index of key, if there.
func (d *diskTier) removeBlock(key string, bs, index int64) {
	rel := blockRel(key, bs, index)
	d.forget(rel)
	if err := os.Remove(filepath.Join(d.dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.WithError(err).Warnf("layercache: removing %s", rel)
	}
}

func (d *diskTier) writeBlock(key string, bs, index int64, data []byte) {
	if err := d.write(blockRel(key, bs, index), data); err != nil {
		d.log.WithError(err).Warnf("layercache: disk write of %s block %d", key, index)
	}
}

// write stores data under rel atomically, through a fileWriter.
func (d *diskTier) write(rel string, data []byte) error {
	if len(data) > math.MaxUint32 {
		return fmt.Errorf("layercache: disk write %s: %d bytes is too large", rel, len(data))
	}
	err := d.writeOnce(rel, data)
	if errors.Is(err, fs.ErrNotExist) {
		// The directory was removed by an eviction or a clear: recreate.
		d.dirs.Delete(filepath.Dir(filepath.Join(d.dir, rel)))
		err = d.writeOnce(rel, data)
	}
	if err != nil {
		d.writeErrors.Add(1)
		return fmt.Errorf("layercache: disk write %s: %w", rel, err)
	}
	return nil
}

// writeOnce writes rel through a fileWriter.
func (d *diskTier) writeOnce(rel string, data []byte) error {
	w, err := d.create(rel)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	if err := w.Commit(); err != nil {
		return err
	}
	d.committed(rel, w.size())
	return nil
}

// committed indexes rel, just renamed into place with size bytes, and
// evicts what the bound no longer holds.
func (d *diskTier) committed(rel string, size int64) {
	d.writes.Add(1)
	d.mu.Lock()
	if old, ok := d.lru.Peek(rel); ok {
		d.bytes -= old.size
	}
	d.lru.Add(rel, diskEntry{size: size, mtime: time.Now()})
	d.bytes += size
	rescan := d.bytes > d.limit && !d.scanning && time.Since(d.lastScan) > rescanInterval
	if rescan {
		d.scanning = true
	}
	victims := d.evictLocked()
	d.mu.Unlock()
	d.remove(victims)
	if rescan {
		d.rescan()
	}
}

// create starts writing rel: a temp file in its directory (made if
// needed), which the fileWriter commits or aborts.
func (d *diskTier) create(rel string) (*fileWriter, error) {
	path := filepath.Join(d.dir, rel)
	dir := filepath.Dir(path)
	if _, ok := d.dirs.Load(dir); !ok {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		d.dirs.Store(dir, struct{}{})
	}
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return nil, err
	}
	return &fileWriter{path: path, bind: rel, tmp: tmp}, nil
}

// touch records a use of rel (found by this process or another). The
// entry's mtime is the file's mtime on disk, refreshed at most once per
// touchInterval so a busy block costs no extra syscall per hit.
func (d *diskTier) touch(rel string, size int64) {
	now := time.Now()
	d.mu.Lock()
	e, ok := d.lru.Get(rel)
	refresh := !ok || now.Sub(e.mtime) > touchInterval
	if refresh {
		if !ok {
			d.bytes += size
		}
		d.lru.Add(rel, diskEntry{size: size, mtime: now})
	}
	victims := d.evictLocked()
	d.mu.Unlock()
	if refresh {
		_ = os.Chtimes(filepath.Join(d.dir, rel), now, now)
	}
	d.remove(victims)
}

func (d *diskTier) forget(rel string) {
	d.mu.Lock()
	if e, ok := d.lru.Peek(rel); ok {
		d.lru.Remove(rel)
		d.bytes -= e.size
	}
	d.mu.Unlock()
}

// evictLocked drops least recently used files from the index until the
// bound holds and returns their paths for removal outside the lock.
func (d *diskTier) evictLocked() []string {
	var victims []string
	for d.bytes > d.limit {
		rel, e, ok := d.lru.RemoveOldest()
		if !ok {
			break
		}
		d.bytes -= e.size
		victims = append(victims, rel)
	}
	return victims
}

func (d *diskTier) remove(victims []string) {
	for _, rel := range victims {
		d.evictions.Add(1)
		path := filepath.Join(d.dir, rel)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log.WithError(err).Warnf("layercache: evict %s", rel)
		}
		if strings.HasPrefix(rel, blocksDirName+string(filepath.Separator)) {
			// Fails harmlessly while the blob directory still has blocks.
			if os.Remove(filepath.Dir(path)) == nil {
				d.dirs.Delete(filepath.Dir(path))
			}
		}
	}
}

// rescan merges the directory's current contents into the index: files
// other processes wrote are counted, files they evicted are forgotten.
func (d *diskTier) rescan() {
	start := time.Now()
	found, err := scanDisk(d.dir, true)
	d.mu.Lock()
	defer func() {
		d.scanning = false
		d.lastScan = start
		victims := d.evictLocked()
		d.mu.Unlock()
		d.remove(victims)
	}()
	if err != nil {
		d.log.WithError(err).Warn("layercache: disk tier rescan")
		return
	}
	seen := make(map[string]bool, len(found))
	for _, f := range found {
		seen[f.rel] = true
		if !d.lru.Contains(f.rel) {
			d.lru.Add(f.rel, diskEntry{size: f.size, mtime: f.mtime})
			d.bytes += f.size
		}
	}
	for _, rel := range d.lru.Keys() {
		if e, _ := d.lru.Peek(rel); !seen[rel] && e.mtime.Before(start) {
			d.lru.Remove(rel)
			d.bytes -= e.size
		}
	}
}

func (d *diskTier) stats() DiskStats {
	d.mu.Lock()
	files, bytes := int64(d.lru.Len()), d.bytes
	d.mu.Unlock()
	return DiskStats{
		Dir:         d.dir,
		Hits:        d.hits.Load(),
		Misses:      d.misses.Load(),
		Evictions:   d.evictions.Load(),
		Writes:      d.writes.Load(),
		WriteErrors: d.writeErrors.Load(),
		Corrupt:     d.corrupt.Load(),
		Files:       files,
		Bytes:       bytes,
		LimitBytes:  d.limit,
	}
}

// DefaultDiskDir is the default --cache-dir: $XDG_CACHE_HOME/regfs, or
// ~/.cache/regfs.
func DefaultDiskDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("layercache: default cache dir: %w", err)
	}
	return filepath.Join(base, "regfs"), nil
}

// Usage is what a disk tier directory holds, for `regfs cache ls|du`.
type Usage struct {
	Dir   string      `json:"dir"`
	Blobs []BlobUsage `json:"blobs"` // sorted by key
	Files []FileUsage `json:"files"` // sorted by name
	Bytes int64       `json:"bytes"` // every file's size on disk, trailers included
}

// BlobUsage is one blob's cached blocks.
type BlobUsage struct {
	Key       string    `json:"key"`
	Blocks    int       `json:"blocks"`
	DataBytes int64     `json:"data_bytes"` // cached bytes of the blob
	DiskBytes int64     `json:"disk_bytes"` // with trailers
	LastUsed  time.Time `json:"last_used"`
}

// FileUsage is one file stored with PutFile.
type FileUsage struct {
	Name      string    `json:"name"`
	DataBytes int64     `json:"data_bytes"`
	DiskBytes int64     `json:"disk_bytes"`
	LastUsed  time.Time `json:"last_used"`
}

// DiskUsage lists the blobs and files cached in the disk tier at dir. A
// directory that does not exist holds nothing: empty Usage, no error.
func DiskUsage(ctx context.Context, dir string) (*Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	found, err := scanDisk(dir, false)
	if err != nil {
		return nil, fmt.Errorf("layercache: disk usage of %s: %w", dir, err)
	}
	u := &Usage{Dir: dir, Blobs: []BlobUsage{}, Files: []FileUsage{}}
	blobs := map[string]*BlobUsage{}
	for _, f := range found {
		u.Bytes += f.size
		data := max(f.size-trailerSize, 0)
		parts := strings.Split(filepath.ToSlash(f.rel), "/")
		switch {
		case len(parts) == 3 && parts[0] == blocksDirName:
			b := blobs[parts[1]]
			if b == nil {
				b = &BlobUsage{Key: unescapeName(parts[1])}
				blobs[parts[1]] = b
			}
			b.Blocks++
			b.DataBytes += data
			b.DiskBytes += f.size
			if f.mtime.After(b.LastUsed) {
				b.LastUsed = f.mtime
			}
		case len(parts) == 2 && parts[0] == filesDirName:
			u.Files = append(u.Files, FileUsage{Name: unescapeName(parts[1]), DataBytes: data, DiskBytes: f.size, LastUsed: f.mtime})
		}
	}
	for _, b := range blobs {
		u.Blobs = append(u.Blobs, *b)
	}
	sort.Slice(u.Blobs, func(i, j int) bool { return u.Blobs[i].Key < u.Blobs[j].Key })
	sort.Slice(u.Files, func(i, j int) bool { return u.Files[i].Name < u.Files[j].Name })
	return u, nil
}

// Clear removes every cached block and file under dir (and stale temp
// files with them). It removes only the tier's own sub-directories, never
// dir itself or anything else in it. Safe while no Cache uses dir; a Cache
// that does keeps working (it treats the files as evicted) but its byte
// count is off until its next rescan.
func Clear(ctx context.Context, dir string) error {
	return clearSubdirs(ctx, dir, blocksDirName, filesDirName, statesDirName)
}

// ClearBlocks is Clear for the blocks alone: files stored with PutFile
// (persisted layer indexes) stay.
func ClearBlocks(ctx context.Context, dir string) error {
	return clearSubdirs(ctx, dir, blocksDirName)
}

func clearSubdirs(ctx context.Context, dir string, subs ...string) error {
	for _, sub := range subs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("layercache: clear %s: %w", dir, err)
		}
	}
	return nil
}

// escapeName maps a key or name to one safe path component, reversibly:
// bytes outside [A-Za-z0-9_.:-] (and a leading '.') become %XX. A result
// longer than maxNameLen becomes "~" + hex sha256 of the name, which
// DiskUsage cannot reverse and shows as is.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		safe := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '_' || ch == '-' || ch == ':' || (ch == '.' && i > 0)
		if safe {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	if b.Len() > maxNameLen || b.Len() == 0 {
		sum := sha256.Sum256([]byte(s))
		return "~" + hex.EncodeToString(sum[:])
	}
	return b.String()
}

func unescapeName(s string) string {
	if strings.HasPrefix(s, "~") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
