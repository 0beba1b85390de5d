package layercache

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// diskWarm writes every block of src to the disk tier at dir through a
// cache of its own, and returns how many source calls that took.
func diskWarm(t *testing.T, dir string, bs int64, src *fakeSource) int64 {
	t.Helper()
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	r := c.OpenWith(src, rangedOpts)
	checkRead(t, r, src.data, 0, len(src.data))
	r.Close()
	c.Close()
	return src.calls.Load()
}

// A sequential pass over blocks all on disk reads each block from disk
// once, fetches nothing, and keeps (nearly) nothing in the memory LRU: the
// blocks come through a disk stream in recycled buffers.
func TestDiskStreamSequential(t *testing.T) {
	const bs = 1024
	const size = 40*bs + 77
	for _, tt := range []struct {
		name   string
		stream bool // the source streams
		read   int
	}{
		{"small reads", false, 256},
		{"block-sized reads", false, bs},
		{"reads across blocks", false, 3*bs + 5},
		{"small reads, stream source", true, 256},
		{"block-sized reads, stream source", true, bs},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fake := newFakeSource(keyN(60), size, 60)
			warmCalls := diskWarm(t, dir, bs, fake)
			var src blobio.Source = fake
			if tt.stream {
				src = &streamingSource{fakeSource: fake}
			}
			c := streamCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: 8})
			r := c.OpenWith(src, OpenOptions{Ranged: !tt.stream})
			readSeq(t, r, fake.data, tt.read)
			r.Close()
			waitIdle(t, c)
			st := c.Stats()
			if got := fake.calls.Load() - warmCalls; got != 0 {
				t.Errorf("source calls: got %d want 0", got)
			}
			const nblocks = 41
			if st.Disk.Hits != nblocks || st.Disk.Misses != 0 {
				t.Errorf("disk hits, misses: got %d, %d want %d, 0 (each block read once)", st.Disk.Hits, st.Disk.Misses, nblocks)
			}
			// Only what the first two reads asked for, before readahead
			// started, goes the ordinary way, into memory.
			if most := int64(2 * (tt.read/bs + 2)); st.Memory.Blocks > most {
				t.Errorf("memory blocks: got %d want at most %d (a disk stream's blocks stay out of the LRU)", st.Memory.Blocks, most)
			}
		})
	}
}

// Concurrent Slices reads in the kernel's pattern over blocks on disk:
// every byte right, and every recycled buffer released once.
func TestDiskStreamFUSEPattern(t *testing.T) {
	const bs = 4096
	const size = 200*bs + 300
	dir := t.TempDir()
	fake := newFakeSource(keyN(61), size, 61)
	warmCalls := diskWarm(t, dir, bs, fake)
	for _, skip := range []bool{false, true} {
		c := streamCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: 16})
		r := c.OpenWith(fake, OpenOptions{Ranged: true, SkipMemory: skip})
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					off := next.Add(bs) - bs
					if off >= size {
						return
					}
					vec, release, err := r.Slices(context.Background(), off, bs)
					got := bytes.Join(vec, nil)
					release()
					end := min(off+bs, size)
					if err != nil && end == off+bs {
						t.Errorf("skip memory %v: Slices(%d): %v", skip, off, err)
						return
					}
					if !bytes.Equal(got, fake.data[off:end]) {
						t.Errorf("skip memory %v: Slices(%d): got bytes differ from the blob", skip, off)
						return
					}
				}
			})
		}
		wg.Wait()
		r.Close()
		waitIdle(t, c)
		c.Close()
	}
	if got := fake.calls.Load() - warmCalls; got != 0 {
		t.Errorf("source calls: got %d want 0", got)
	}
}

// A block that is bad or gone on disk in the middle of a disk stream's run
// is never served: it alone is fetched again (and rewritten), the others
// still come from disk.
func TestDiskStreamBadBlock(t *testing.T) {
	const bs = 1024
	const size = 24 * bs
	const bad = 9
	tests := []struct {
		name        string
		afterOpen   bool // damage once the new cache has indexed the block
		damage      func(t *testing.T, path string)
		wantCorrupt bool
	}{
		{"truncated", false, func(t *testing.T, p string) { must(t, os.Truncate(p, bs/2)) }, true},
		{"one byte appended", false, func(t *testing.T, p string) {
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.WriteFile(p, append(data, 0), 0o644))
		}, true},
		{"one data byte flipped", false, func(t *testing.T, p string) { flipByte(t, p, 100) }, true},
		{"trailer length flipped", false, func(t *testing.T, p string) { flipByte(t, p, bs+9) }, true},
		{"removed before the cache starts", false, func(t *testing.T, p string) { must(t, os.Remove(p)) }, false},
		{"removed behind the index's back", true, func(t *testing.T, p string) { must(t, os.Remove(p)) }, false},
		{"flipped behind the index's back", true, func(t *testing.T, p string) { flipByte(t, p, 5) }, true},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			name := tt.name
			if stream {
				name += ", stream source"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				fake := newFakeSource(keyN(62), size, 62)
				diskWarm(t, dir, bs, fake)
				path := filepath.Join(dir, blockRel(fake.key, bs, bad))
				again := &fakeSource{key: fake.key, data: fake.data}
				var src blobio.Source = again
				if stream {
					src = &streamingSource{fakeSource: again}
				}
				if !tt.afterOpen {
					tt.damage(t, path)
				}
				c := streamCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: 8})
				if tt.afterOpen {
					tt.damage(t, path)
				}
				r := c.OpenWith(src, OpenOptions{Ranged: !stream})
				readSeq(t, r, fake.data, 512)
				r.Close()
				waitIdle(t, c)
				if got, want := again.spans(), []span{{bad * bs, bs}}; !sameSpans(got, want) {
					t.Errorf("source reads: got %v want %v", got, want)
				}
				if got := c.Stats().Disk.Corrupt > 0; got != tt.wantCorrupt {
					t.Errorf("corrupt files found: got %v want %v", got, tt.wantCorrupt)
				}
				c.Close()
				// Rewritten whole: a third cache reads everything from disk.
				third := &fakeSource{key: fake.key, data: fake.data}
				c3 := streamCache(t, Options{BlockSize: bs, DiskDir: dir, Readahead: 8})
				r3 := c3.OpenWith(third, rangedOpts)
				readSeq(t, r3, fake.data, bs)
				r3.Close()
				if got := third.calls.Load(); got != 0 {
					t.Errorf("source calls after the rewrite: got %d want 0", got)
				}
			})
		}
	}
}
