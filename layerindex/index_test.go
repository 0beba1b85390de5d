package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

func readFile(ctx context.Context, t *testing.T, l *Layer, e *Entry) []byte {
	t.Helper()
	r, err := l.OpenFile(ctx, e)
	if err != nil {
		t.Fatalf("OpenFile(%q): %v", e.Name, err)
	}
	if r.Size() != e.Size && e.Type == tar.TypeReg {
		t.Fatalf("OpenFile(%q).Size: got %d, want %d", e.Name, r.Size(), e.Size)
	}
	buf := make([]byte, r.Size()+10)
	n, err := r.ReadAt(ctx, buf, 0)
	if int64(n) != r.Size() || (err != nil && !errors.Is(err, io.EOF)) || (len(buf) > n && !errors.Is(err, io.EOF)) {
		t.Fatalf("ReadAt(%q): got %d, %v; want %d bytes and EOF", e.Name, n, err, r.Size())
	}
	return buf[:n]
}

func TestIndexEveryFormat(t *testing.T) {
	ctx := context.Background()
	tarData, files := randomTree(t, 4, 50, 300<<10)
	for _, tc := range blobCases(t, tarData) {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t, Options{ReadSize: 64 << 10, Spacing: 128 << 10})
			blob := newMemBlob(tc.blob)
			l := m.Layer("sha256:"+tc.name, UncachedBlob(blob), LayerOptions{})
			x, err := l.Index(ctx)
			if err != nil {
				t.Fatalf("Index: %v", err)
			}
			if x.Len() != len(files) {
				t.Errorf("Index.Len: got %d, want %d", x.Len(), len(files))
			}
			for _, f := range files {
				name := cleanName(f.hdr.Name)
				e, ok := x.Lookup(name)
				if !ok {
					t.Fatalf("Lookup(%q): missing", name)
				}
				if e.Type != f.hdr.Typeflag || e.Size != int64(len(f.body)) || e.Mode.Perm() != fs.FileMode(f.hdr.Mode).Perm() || !e.ModTime.Equal(f.hdr.ModTime) {
					t.Errorf("%q: got type %c size %d mode %v mtime %v; want %c %d %o %v", name, e.Type, e.Size, e.Mode, e.ModTime, f.hdr.Typeflag, len(f.body), f.hdr.Mode, f.hdr.ModTime)
				}
				if e.Type == tar.TypeReg {
					if got := readFile(ctx, t, l, e); !bytes.Equal(got, f.body) {
						t.Fatalf("content of %q: got %d bytes, want %d equal bytes", name, len(got), len(f.body))
					}
				}
			}
			if got := len(x.Children("d1")); got != 18 { // every third file and d1/sub
				t.Errorf("Children(d1): got %d entries, want 18", got)
			}
			if tc.fmt == FormatGzip {
				idx := l.loadedIndex(ctx)
				if len(idx.Checkpoints) < len(tarData)/(128<<10)/2 {
					t.Errorf("got %d checkpoints for %d bytes at spacing 128 KiB", len(idx.Checkpoints), len(tarData))
				}
			}
			// Random reads of the tar stream after indexing use restart points.
			rng := rand.New(rand.NewSource(5))
			for i := 0; i < 30; i++ {
				off := rng.Int63n(int64(len(tarData)))
				p := make([]byte, rng.Intn(20000)+1)
				n, _ := l.TarReadAt(ctx, p, off)
				if want := tarData[off:min(off+int64(len(p)), int64(len(tarData)))]; !bytes.Equal(p[:n], want) {
					t.Fatalf("TarReadAt(%d): got %d bytes, want %d equal", off, n, len(want))
				}
			}
		})
	}
}

// After indexing, a small read in the middle of a gzip layer inflates from
// the nearest checkpoint: it fetches about one spacing of the blob.
func TestCheckpointReadFetchesLittle(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(6))
	var files []tarFile
	for i := 0; i < 16; i++ {
		files = append(files, reg("f"+fmtInt(i), content(rng, 256<<10)))
	}
	tarData := makeTar(t, files)
	blob := newMemBlob(gzipOf(t, tarData, gzip.DefaultCompression))
	const spacing, readSize = 256 << 10, 64 << 10
	m := newTestManager(t, Options{ReadSize: readSize, Spacing: spacing})
	l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"f9", "f13", "f5"} {
		e, _ := x.Lookup(name)
		blob.reset()
		r, err := l.OpenFile(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 4096)
		if _, err := r.ReadAt(ctx, p, 100000); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, files[atoi(name[1:])].body[100000:104096]) {
			t.Fatalf("%s: wrong bytes", name)
		}
		calls, got := blob.counts()
		if limit := int64(spacing + 100000 + 3*readSize); got > limit {
			t.Errorf("%s: fetched %d bytes in %d reads, want at most %d (blob is %d)", name, got, calls, limit, len(blob.data))
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestPersistedIndexNeedsNoBlobReads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tarData, files := randomTree(t, 12, 30, 100<<10)
	for _, tc := range blobCases(t, tarData) {
		blob := newMemBlob(tc.blob)
		m1 := newTestManager(t, Options{Dir: dir, Spacing: 64 << 10})
		if _, err := m1.Layer("sha256:"+tc.name, UncachedBlob(blob), LayerOptions{}).Index(ctx); err != nil {
			t.Fatalf("%s: Index: %v", tc.name, err)
		}
		blob.reset()
		m2 := newTestManager(t, Options{Dir: dir})
		l := m2.Layer("sha256:"+tc.name, UncachedBlob(blob), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			t.Fatalf("%s: Index from disk: %v", tc.name, err)
		}
		size, err := l.TarSize(ctx)
		if calls, _ := blob.counts(); calls != 0 || err != nil || size != int64(len(tarData)) {
			t.Errorf("%s: second Manager: %d blob reads, TarSize %d, %v; want 0 reads, %d", tc.name, calls, size, err, len(tarData))
		}
		e, _ := x.Lookup(cleanName(files[10].hdr.Name))
		if got := readFile(ctx, t, l, e); !bytes.Equal(got, files[10].body) {
			t.Errorf("%s: file from persisted index: wrong bytes", tc.name)
		}
	}
	// A damaged file is ignored and the index rebuilt.
	names, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(names) == 0 {
		t.Fatal("no index files written")
	}
	for _, n := range names {
		data, _ := os.ReadFile(n)
		data[len(data)-5] ^= 1
		os.WriteFile(n, data, 0o644)
	}
	blob := newMemBlob(blobCases(t, tarData)[1].blob)
	m3 := newTestManager(t, Options{Dir: dir})
	if _, err := m3.Layer("sha256:gzip", UncachedBlob(blob), LayerOptions{}).Index(ctx); err != nil {
		t.Fatalf("Index after damage: %v", err)
	}
	if calls, _ := blob.counts(); calls == 0 {
		t.Errorf("damaged index file was trusted: 0 blob reads, want a rebuild")
	}
	if _, err := m3.loadIndex(ctx, "sha256:gzip"); err != nil {
		t.Errorf("rebuilt index not saved again: %v", err)
	}
}

func TestSingleFlightAndProgress(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 13, 40, 100<<10)
	blob := newMemBlob(gzipOf(t, tarData, 6))
	m := newTestManager(t, Options{})
	l := m.Layer("k", UncachedBlob(blob), LayerOptions{})
	if l2 := m.Layer("k", UncachedBlob(newMemBlob(nil)), LayerOptions{}); l2 != l {
		t.Fatal("Layer: second call for a key gave a different Layer")
	}
	if p := l.Progress(); p.State != "idle" {
		t.Errorf("Progress before: got %q, want idle", p.State)
	}
	l.Prefetch(ctx)
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() { _, err := l.Index(ctx); errs <- err }()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, got := blob.counts(); got > int64(len(blob.data))+2*defaultReadSize {
		t.Errorf("9 concurrent index requests read %d bytes, want one pass over %d", got, len(blob.data))
	}
	p := l.Progress()
	if p.State != "ready" || p.Done < p.Total || p.Total != int64(len(blob.data)) {
		t.Errorf("Progress after: got %+v, want ready with Done >= Total = %d", p, len(blob.data))
	}
	// A waiter whose ctx ends stops waiting, the pass goes on.
	l2 := m.Layer("k2", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l2.Index(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Index with cancelled ctx: got %v, want context.Canceled", err)
	}
	if _, err := l2.Index(ctx); err != nil {
		t.Errorf("Index after a cancelled waiter: %v", err)
	}
	_ = time.Second
}

func TestIndexLRUBound(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 14, 5, 10<<10)
	m := newTestManager(t, Options{MaxIndexes: 2})
	for _, k := range []string{"a", "b", "c"} {
		if _, err := m.Layer(k, UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{}).Index(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.indexes.Len(); got != 2 {
		t.Errorf("loaded indexes: got %d, want 2", got)
	}
	if _, ok := m.indexes.Peek("a"); ok {
		t.Errorf("oldest index still loaded")
	}
}

// An index persisted by an older version of the format (version 1 held
// checkpoints as one bit offset) is ignored and rebuilt, and the rebuilt
// one is saved in the current version.
func TestPersistedIndexOldVersionRebuilt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tarData, files := randomTree(t, 12, 30, 100<<10)
	gz := blobCases(t, tarData)[1]
	m1 := newTestManager(t, Options{Dir: dir, Spacing: 64 << 10})
	if _, err := m1.Layer("sha256:"+gz.name, UncachedBlob(newMemBlob(gz.blob)), LayerOptions{}).Index(ctx); err != nil {
		t.Fatalf("Index: %v", err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(names) != 1 {
		t.Fatalf("got %d index files, want 1", len(names))
	}
	data, _ := os.ReadFile(names[0])
	binary.LittleEndian.PutUint32(data[8:], persistVersion-1)
	if err := os.WriteFile(names[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	blob := newMemBlob(gz.blob)
	m2 := newTestManager(t, Options{Dir: dir})
	l := m2.Layer("sha256:"+gz.name, UncachedBlob(blob), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatalf("Index over an old index file: %v", err)
	}
	if calls, _ := blob.counts(); calls == 0 {
		t.Errorf("old index file was trusted: 0 blob reads, want a rebuild")
	}
	e, _ := x.Lookup(cleanName(files[10].hdr.Name))
	if got := readFile(ctx, t, l, e); !bytes.Equal(got, files[10].body) {
		t.Errorf("file from rebuilt index: wrong bytes")
	}
	data, _ = os.ReadFile(names[0])
	if v := binary.LittleEndian.Uint32(data[8:]); v != persistVersion {
		t.Errorf("rebuilt index saved as version %d, want %d", v, persistVersion)
	}
}
