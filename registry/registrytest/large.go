package registrytest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// largeFormatVersion names the layout of generated large layers; bump it
// whenever largeEntries or Generated change, so stale cached blobs are not
// reused.
const largeFormatVersion = 1

// DefaultLargeSize is the content size of the large fixture layer unless
// WithLargeSize says otherwise.
const DefaultLargeSize = 64 << 20

// LargeEntries lists the entries of the large layer generated from seed with
// about size bytes of file content: a few big files (a quarter of the size
// incompressible, a sixth text-like) and many files of 1 KiB–2 MiB spread
// over 16 directories, about 60 % of the bytes incompressible, plus a
// symlink and a hardlink. It is a pure function of (seed, size).
func LargeEntries(seed uint64, size int64) []Entry {
	if size < 0 {
		size = 0
	}
	state := seed ^ 0x6c61726765 // "large"
	next := func() uint64 { return splitmix64(&state) }
	entries := []Entry{Dir("data")}
	for d := 0; d < 16; d++ {
		entries = append(entries, Dir(fmt.Sprintf("data/d%02d", d)))
	}
	budget := size
	take := func(n int64) int64 {
		if n > budget {
			n = budget
		}
		budget -= n
		return n
	}
	bigs := []struct {
		name         string
		frac         float64
		compressible bool
	}{
		{"data/big-0.bin", 0.125, false},
		{"data/big-1.txt", 0.085, true},
		{"data/big-2.bin", 0.125, false},
		{"data/big-3.txt", 0.08, true},
	}
	for i, b := range bigs {
		n := take(int64(float64(size) * b.frac))
		entries = append(entries, GeneratedFile(b.name, n, seed*1000+uint64(i), b.compressible))
	}
	entries = append(entries, Symlink("data/latest", "big-0.bin"), Hardlink("data/big-0.hard", "data/big-0.bin"))
	for i := 0; budget > 0; i++ {
		// Log-uniform sizes between 1 KiB and 2 MiB.
		exp := 10 + float64(next()%(11<<16))/float64(1<<16)
		n := take(int64(math.Pow(2, exp)))
		compressible := next()%10 < 4
		ext := ".bin"
		if compressible {
			ext = ".txt"
		}
		name := fmt.Sprintf("data/d%02d/f%05d%s", i%16, i, ext)
		entries = append(entries, GeneratedFile(name, n, seed*1000+100+uint64(i), compressible).WithModTime(DefaultModTime.Add(time.Duration(i)*time.Second)))
	}
	return entries
}

// largeMeta is the sidecar of a cached large blob.
type largeMeta struct {
	Digest           digest.Digest `json:"digest"`
	Size             int64         `json:"size"`
	DiffID           digest.Digest `json:"diffID"`
	UncompressedSize int64         `json:"uncompressedSize"`
}

// LargeCacheDir is where generated large blobs are kept between runs.
func LargeCacheDir() string { return filepath.Join(os.TempDir(), "regfs-testdata") }

// BuildLargeLayer returns the gzip layer of LargeEntries(seed, size),
// generated once and cached on disk under LargeCacheDir() (keyed by seed,
// size and format version), so other test runs and packages reuse it. The
// blob stays on disk (Layer.BlobPath); Layer.Blob is nil.
func BuildLargeLayer(seed uint64, size int64) (*Layer, error) {
	dir := LargeCacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	base := filepath.Join(dir, fmt.Sprintf("large-v%d-seed%d-size%d", largeFormatVersion, seed, size))
	l := &Layer{
		Entries:     LargeEntries(seed, size),
		Compression: Gzip,
		CreatedBy:   fmt.Sprintf("regfs large test layer seed=%d size=%d", seed, size),
		BlobPath:    base + ".tar.gz",
	}
	if loadLargeMeta(base, l) {
		return l, nil
	}
	// Several test processes may want the same blob at once: one builds it.
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("large layer cache: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if loadLargeMeta(base, l) {
		return l, nil
	}

	tmp, err := os.CreateTemp(dir, "large-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := l.build(tmp, kgzip.BestSpeed); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), l.BlobPath); err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	meta, err := json.Marshal(largeMeta{Digest: l.Digest, Size: l.Size, DiffID: l.DiffID, UncompressedSize: l.UncompressedSize})
	if err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	// The sidecar is written last: its presence means the blob is whole.
	if err := os.WriteFile(base+".json.tmp", meta, 0o644); err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	if err := os.Rename(base+".json.tmp", base+".json"); err != nil {
		return nil, fmt.Errorf("large layer cache: %w", err)
	}
	return l, nil
}

// loadLargeMeta fills l from a complete cached blob, if there is one.
func loadLargeMeta(base string, l *Layer) bool {
	raw, err := os.ReadFile(base + ".json")
	if err != nil {
		return false
	}
	var m largeMeta
	if json.Unmarshal(raw, &m) != nil || m.Digest.Validate() != nil {
		return false
	}
	fi, err := os.Stat(l.BlobPath)
	if err != nil || fi.Size() != m.Size {
		return false
	}
	l.Digest, l.Size, l.DiffID, l.UncompressedSize = m.Digest, m.Size, m.DiffID, m.UncompressedSize
	return true
}
