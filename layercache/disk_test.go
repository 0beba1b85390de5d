package layercache

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// readAll reads the whole blob through a fresh Reader in 700-byte steps.
func readAll(t *testing.T, c *Cache, src blobio.Source, want []byte) {
	t.Helper()
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	for off := int64(0); off < r.Size(); off += 700 {
		checkRead(t, r, want, off, 700)
	}
}

func TestDiskSurvivesNewCache(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	tests := []struct {
		name string
		key  string
	}{
		{"v2 digest", keyN(20)},
		{"v1 key with host and slash", "v1:127.0.0.1:5000/" + strings.Repeat("ab", 32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(tt.key, 7*bs+300, 20)
			c1 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
			readAll(t, c1, src, src.data)
			c1.Close()

			again := &fakeSource{key: tt.key, data: src.data}
			c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
			readAll(t, c2, again, src.data)
			if got := again.calls.Load(); got != 0 {
				t.Errorf("source calls of the second cache: got %d want 0", got)
			}
			if st := c2.Stats(); st.Disk.Hits != 8 || st.SourceRequests != 0 {
				t.Errorf("second cache: got %d disk hits, %d source requests; want 8 and 0", st.Disk.Hits, st.SourceRequests)
			}
		})
	}
}

func TestDiskSharedByTwoLiveCaches(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	src := newFakeSource(keyN(21), 9*bs+1, 21)
	c1 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir}) // indexed the empty dir
	readAll(t, c1, src, src.data)
	waitIdle(t, c1) // disk writes done

	other := &fakeSource{key: src.key, data: src.data}
	readAll(t, c2, other, src.data)
	if got := other.calls.Load(); got != 0 {
		t.Errorf("source calls of the second live cache: got %d want 0", got)
	}
	// Both now count the blocks (c2 learnt them by reading them).
	if s1, s2 := c1.Stats().Disk, c2.Stats().Disk; s1.Files != 10 || s2.Files != 10 {
		t.Errorf("disk files known: got %d and %d want 10 and 10", s1.Files, s2.Files)
	}
}

// Two caches on one dir reading the same blob at once: every byte right,
// whichever writes or renames first.
func TestDiskConcurrentCaches(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	src := newFakeSource(keyN(22), 30*bs+5, 22)
	var wg sync.WaitGroup
	var caches []*Cache
	for i := 0; i < 2; i++ {
		c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, MemoryBytes: 4 * bs})
		caches = append(caches, c)
		for j := 0; j < 3; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				readAll(t, c, &fakeSource{key: src.key, data: src.data}, src.data)
			}()
		}
	}
	wg.Wait()
	for _, c := range caches {
		waitIdle(t, c) // readahead may still be writing blocks
	}
	u, err := DiskUsage(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Blobs) != 1 || u.Blobs[0].DataBytes != int64(len(src.data)) {
		t.Errorf("disk usage: got %+v want one blob of %d bytes", u.Blobs, len(src.data))
	}
}

func TestDiskEvictionUnderBound(t *testing.T) {
	const bs = 1024
	tests := []struct {
		name  string
		bound int64
	}{
		{"four blocks", 4 * (bs + trailerSize)},
		{"one block", bs + trailerSize},
		{"ten and a half blocks", 10*(bs+trailerSize) + bs/2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, DiskBytes: tt.bound, MemoryBytes: 2 * bs})
			for i := 0; i < 3; i++ {
				src := newFakeSource(keyN(30+i), 12*bs, uint64(i))
				readAll(t, c, src, src.data)
				waitIdle(t, c)
				if got := dirBytes(t, dir); got > tt.bound {
					t.Fatalf("bytes on disk: got %d, above the bound %d", got, tt.bound)
				}
			}
			st := c.Stats().Disk
			if st.Evictions == 0 || st.Bytes > tt.bound {
				t.Errorf("disk stats: got %d evictions, %d bytes; want > 0 and <= %d", st.Evictions, st.Bytes, tt.bound)
			}
			// A restart with a smaller bound evicts at once.
			c.Close()
			c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, DiskBytes: bs + trailerSize})
			if got := dirBytes(t, dir); got > bs+trailerSize {
				t.Errorf("bytes on disk after restart with a smaller bound: got %d want <= %d", got, bs+trailerSize)
			}
			_ = c2
		})
	}
}

// The LRU order after a restart comes from the files' mtimes.
func TestDiskRestartEvictsOldestByMtime(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	src := newFakeSource(keyN(40), 4*bs, 40)
	c1 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: -1})
	readAll(t, c1, src, src.data)
	c1.Close()
	// Make block 2 the oldest, then 0, then 3, then 1 (the newest).
	ages := map[int64]time.Duration{2: 4 * time.Hour, 0: 3 * time.Hour, 3: 2 * time.Hour, 1: time.Hour}
	for i, age := range ages {
		when := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(dir, blockRel(src.key, bs, i)), when, when); err != nil {
			t.Fatal(err)
		}
	}
	newTestCache(t, Options{BlockSize: bs, DiskDir: dir, DiskBytes: 2 * (bs + trailerSize)})
	for i, wantKept := range map[int64]bool{0: false, 1: true, 2: false, 3: true} {
		_, err := os.Stat(filepath.Join(dir, blockRel(src.key, bs, i)))
		if got := err == nil; got != wantKept {
			t.Errorf("block %d kept: got %v want %v", i, got, wantKept)
		}
	}
}

// A crash mid-write, a torn file after power loss or plain garbage must
// never be served: the cache fetches the block again and gets it right.
func TestDiskPartialOrGarbageNeverServed(t *testing.T) {
	const bs = 1024
	tests := []struct {
		name        string
		damage      func(t *testing.T, path string) // path of block 1's file
		wantCorrupt bool
	}{
		{"truncated to half", func(t *testing.T, p string) { must(t, os.Truncate(p, (bs+trailerSize)/2)) }, true},
		{"trailer cut off", func(t *testing.T, p string) { must(t, os.Truncate(p, bs)) }, true},
		{"empty file", func(t *testing.T, p string) { must(t, os.Truncate(p, 0)) }, true},
		{"garbage of the right size", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, bytes.Repeat([]byte{0xAB}, bs+trailerSize), 0o644))
		}, true},
		{"one data byte flipped", func(t *testing.T, p string) { flipByte(t, p, 100) }, true},
		{"trailer checksum flipped", func(t *testing.T, p string) { flipByte(t, p, bs+14) }, true},
		{"zeros after a power loss", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, make([]byte, bs+trailerSize), 0o644))
		}, true},
		{"only a partial temp file, never renamed", func(t *testing.T, p string) {
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.Remove(p))
			must(t, os.WriteFile(filepath.Join(filepath.Dir(p), tmpPrefix+"123"), data[:bs/3], 0o644))
		}, false},
		{"a whole temp file, never renamed", func(t *testing.T, p string) {
			must(t, os.Rename(p, filepath.Join(filepath.Dir(p), tmpPrefix+"456")))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src := newFakeSource(keyN(41), 3*bs, 41)
			c1 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
			readAll(t, c1, src, src.data)
			c1.Close()
			tt.damage(t, filepath.Join(dir, blockRel(src.key, bs, 1)))

			again := &fakeSource{key: src.key, data: src.data}
			c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: -1})
			r := c2.OpenWith(again, rangedOpts)
			defer r.Close()
			checkRead(t, r, src.data, 0, 3*bs)
			if got := again.spans(); len(got) != 1 || got[0] != (span{bs, bs}) {
				t.Errorf("source reads: got %v want one read of block 1", got)
			}
			st := c2.Stats().Disk
			if got := st.Corrupt > 0; got != tt.wantCorrupt {
				t.Errorf("corrupt files found: got %d, want any: %v", st.Corrupt, tt.wantCorrupt)
			}
			if st.Hits != 2 {
				t.Errorf("disk hits: got %d want 2 (blocks 0 and 2)", st.Hits)
			}
			// The block was rewritten whole: a third cache reads it from disk.
			c2.Close()
			c3 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
			third := &fakeSource{key: src.key, data: src.data}
			readAll(t, c3, third, src.data)
			if got := third.calls.Load(); got != 0 {
				t.Errorf("source calls after the rewrite: got %d want 0", got)
			}
		})
	}
}

func TestDiskStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	blobDir := filepath.Join(dir, blocksDirName, escapeName(keyN(42)))
	must(t, os.MkdirAll(blobDir, 0o755))
	stale := filepath.Join(blobDir, tmpPrefix+"old")
	fresh := filepath.Join(blobDir, tmpPrefix+"new") // another process may be writing it
	must(t, os.WriteFile(stale, []byte("partial"), 0o644))
	must(t, os.WriteFile(fresh, []byte("partial"), 0o644))
	old := time.Now().Add(-2 * staleTempAge)
	must(t, os.Chtimes(stale, old, old))
	newTestCache(t, Options{DiskDir: dir})
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file: got stat err %v want it removed", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file: got stat err %v want it kept", err)
	}
}

func TestFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestCache(t, Options{BlockSize: 1024, DiskDir: dir})
	data := randomBytes(5000, 1)
	name := keyN(50) + ".tarindex"

	if _, err := c.GetFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile before PutFile: got %v want fs.ErrNotExist", err)
	}
	must(t, c.PutFile(ctx, name, data))
	got, err := c.GetFile(ctx, name)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetFile: got %d bytes, err %v; want the %d bytes put", len(got), err, len(data))
	}
	if st := c.Stats().Disk; st.Bytes != int64(len(data))+trailerSize || st.Files != 1 {
		t.Errorf("disk stats: got %d bytes in %d files want %d in 1", st.Bytes, st.Files, len(data)+trailerSize)
	}
	// Another cache on the dir sees it; a corrupt copy is not returned.
	c2 := newTestCache(t, Options{DiskDir: dir})
	if got, err := c2.GetFile(ctx, name); err != nil || !bytes.Equal(got, data) {
		t.Errorf("GetFile from a second cache: got %d bytes, err %v", len(got), err)
	}
	u, err := DiskUsage(ctx, dir)
	must(t, err)
	if len(u.Files) != 1 || u.Files[0].Name != name || u.Files[0].DataBytes != int64(len(data)) {
		t.Errorf("DiskUsage files: got %+v want %s of %d bytes", u.Files, name, len(data))
	}
	flipByte(t, filepath.Join(dir, fileRel(name)), 10)
	if _, err := c.GetFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile of a corrupt file: got %v want fs.ErrNotExist", err)
	}
	must(t, c.PutFile(ctx, name, data))
	must(t, c.RemoveFile(ctx, name))
	if _, err := c.GetFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile after RemoveFile: got %v want fs.ErrNotExist", err)
	}
	must(t, c.RemoveFile(ctx, name)) // missing: not an error
	if err := c.PutFile(ctx, "", data); err == nil {
		t.Errorf("PutFile with an empty name: got no error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.PutFile(cancelled, name, data); !errors.Is(err, context.Canceled) {
		t.Errorf("PutFile with a cancelled ctx: got %v want context.Canceled", err)
	}

	// Files count against the bound and are evicted like blocks.
	small := newTestCache(t, Options{DiskDir: t.TempDir(), DiskBytes: 3 * (1000 + trailerSize)})
	for i := 0; i < 5; i++ {
		must(t, small.PutFile(ctx, keyN(i)+".idx", randomBytes(1000, uint64(i))))
	}
	if st := small.Stats().Disk; st.Files != 3 || st.Evictions != 2 {
		t.Errorf("files under a 3-file bound: got %d files, %d evictions; want 3 and 2", st.Files, st.Evictions)
	}
	if _, err := small.GetFile(ctx, keyN(0)+".idx"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile of the evicted oldest file: got %v want fs.ErrNotExist", err)
	}

	// Without a disk tier: PutFile is a no-op, GetFile finds nothing.
	mem := newTestCache(t, Options{})
	must(t, mem.PutFile(ctx, name, data))
	if _, err := mem.GetFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetFile without a disk tier: got %v want fs.ErrNotExist", err)
	}
}

func TestDiskUsageAndClear(t *testing.T) {
	ctx := context.Background()
	const bs = 1024
	dir := t.TempDir()
	v1key := "v1:registry.local:5000/" + strings.Repeat("cd", 32)
	a := newFakeSource(keyN(60), 5*bs+17, 60)
	b := newFakeSource(v1key, 2*bs, 61)
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	readAll(t, c, a, a.data)
	readAll(t, c, b, b.data)
	must(t, c.PutFile(ctx, "index/"+keyN(60), []byte("index data")))
	c.Close()
	keep := filepath.Join(dir, "not-ours.txt")
	must(t, os.WriteFile(keep, []byte("x"), 0o644))

	u, err := DiskUsage(ctx, dir)
	must(t, err)
	want := []BlobUsage{
		{Key: keyN(60), Blocks: 6, DataBytes: int64(len(a.data)), DiskBytes: int64(len(a.data)) + 6*trailerSize},
		{Key: v1key, Blocks: 2, DataBytes: 2 * bs, DiskBytes: 2*bs + 2*trailerSize},
	}
	if len(u.Blobs) != len(want) {
		t.Fatalf("DiskUsage blobs: got %+v want %+v", u.Blobs, want)
	}
	var total int64
	for i, w := range want {
		g := u.Blobs[i]
		if g.Key != w.Key || g.Blocks != w.Blocks || g.DataBytes != w.DataBytes || g.DiskBytes != w.DiskBytes || g.LastUsed.IsZero() {
			t.Errorf("blob %d: got %+v want %+v", i, g, w)
		}
		total += w.DiskBytes
	}
	if len(u.Files) != 1 || u.Files[0].Name != "index/"+keyN(60) {
		t.Errorf("DiskUsage files: got %+v", u.Files)
	}
	total += 10 + trailerSize
	if u.Bytes != total {
		t.Errorf("DiskUsage bytes: got %d want %d", u.Bytes, total)
	}

	must(t, ClearBlocks(ctx, dir))
	u, err = DiskUsage(ctx, dir)
	must(t, err)
	if len(u.Blobs) != 0 || len(u.Files) != 1 || u.Bytes != 10+trailerSize {
		t.Errorf("DiskUsage after ClearBlocks: got %+v want the one file only", u)
	}
	c1 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	if got, err := c1.GetFile(ctx, "index/"+keyN(60)); err != nil || string(got) != "index data" {
		t.Errorf("GetFile after ClearBlocks: got %q, %v want the index data", got, err)
	}
	c1.Close()

	must(t, Clear(ctx, dir))
	u, err = DiskUsage(ctx, dir)
	must(t, err)
	if len(u.Blobs) != 0 || len(u.Files) != 0 || u.Bytes != 0 {
		t.Errorf("DiskUsage after Clear: got %+v want empty", u)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Clear removed a file that is not the cache's: %v", err)
	}
	// A cache works on the cleared dir, fetching again.
	c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	again := &fakeSource{key: a.key, data: a.data}
	readAll(t, c2, again, a.data)
	if again.calls.Load() == 0 {
		t.Errorf("source calls after Clear: got 0 want > 0")
	}

	missing, err := DiskUsage(ctx, filepath.Join(dir, "nope"))
	if err != nil || len(missing.Blobs) != 0 {
		t.Errorf("DiskUsage of a missing dir: got %+v, %v want empty, nil", missing, err)
	}
}

func TestEscapeName(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means: just check the round trip and safety
	}{
		{keyN(1), keyN(1)},
		{"v1:127.0.0.1:5000/abc", "v1:127.0.0.1:5000%2Fabc"},
		{".hidden", "%2Ehidden"},
		{"..", "%2E."},
		{"a/../b", "a%2F..%2Fb"},
		{"100% sure", "100%25%20sure"},
		{"ünï", ""},
		{strings.Repeat("x", 300), ""},
	}
	for _, tt := range tests {
		got := escapeName(tt.in)
		if tt.want != "" && got != tt.want {
			t.Errorf("escapeName(%q): got %q want %q", tt.in, got, tt.want)
		}
		if strings.ContainsAny(got, "/\x00") || strings.HasPrefix(got, ".") || len(got) > maxNameLen+1 {
			t.Errorf("escapeName(%q): got %q, not a safe path component", tt.in, got)
		}
		if !strings.HasPrefix(got, "~") {
			if back := unescapeName(got); back != tt.in {
				t.Errorf("unescapeName(escapeName(%q)): got %q", tt.in, back)
			}
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	data[at] ^= 0xFF
	must(t, os.WriteFile(path, data, 0o644))
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	must(t, err)
	return total
}

func TestDefaultDiskDir(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/xdg/cache")
	if got, err := DefaultDiskDir(); err != nil || got != "/xdg/cache/regfs" {
		t.Errorf("DefaultDiskDir with XDG_CACHE_HOME: got %q, %v want /xdg/cache/regfs", got, err)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/someone")
	if got, err := DefaultDiskDir(); err != nil || got != "/home/someone/.cache/regfs" {
		t.Errorf("DefaultDiskDir from HOME: got %q, %v want /home/someone/.cache/regfs", got, err)
	}
	t.Setenv("HOME", "")
	if _, err := DefaultDiskDir(); err == nil {
		t.Errorf("DefaultDiskDir with neither set: got no error")
	}
}
