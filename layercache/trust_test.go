package layercache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/blobio"
)

// originSource is a fakeSource of host declaring the digest of honest,
// while serving data (wrong bytes when data is not honest).
func originSource(host string, honest, data []byte) *fakeSource {
	d := digest.FromBytes(honest).String()
	return &fakeSource{key: d, data: data, origin: blobio.Origin{Host: host, Digest: d}}
}

// flipped is data with one byte changed in each block of bs.
func flipped(data []byte, bs int) []byte {
	out := bytes.Clone(data)
	for i := 0; i < len(out); i += bs {
		out[i] ^= 0xff
	}
	return out
}

// blockFiles lists the block files under the key's directory in dir.
func blockFiles(t *testing.T, dir, key string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, blocksDirName, escapeName(key)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	must(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), blockExt) {
			out = append(out, e.Name())
		}
	}
	return out
}

// readBlob reads r whole in steps of n bytes and returns what it got and
// the first error.
func readBlob(r *Reader, n int) ([]byte, error) {
	var got []byte
	p := make([]byte, n)
	for off := int64(0); off < r.Size(); off += int64(n) {
		m, err := r.ReadAt(context.Background(), p, off)
		got = append(got, p[:m]...)
		if err != nil && !errors.Is(err, io.EOF) {
			return got, err
		}
	}
	return got, nil
}

// The repro at the cache: a registry serving other bytes for a
// digest, read by ranges (never whole), leaves nothing under the digest;
// an honest registry sharing the disk tier then reads the honest bytes.
func TestTrustUnverifiedNotShared(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	honest := randomBytes(8*bs+100, 1)
	evil := originSource("evil.example", honest, flipped(honest, bs))
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	r := c.OpenWith(evil, rangedOpts)
	for _, off := range []int64{2 * bs, 5 * bs, 3 * bs} { // a file's blocks, twice
		for range 2 {
			checkRead(t, r, evil.data, off, bs)
		}
	}
	r.Close()
	waitIdle(t, c)
	c.Close()
	if got := blockFiles(t, dir, evil.key); len(got) != 0 {
		t.Errorf("blocks under the bare digest after unverified reads: got %v, want none", got)
	}
	if got := blockFiles(t, dir, KeyOf(evil)); len(got) == 0 {
		t.Error("blocks under the evil host's key: got none, want those it served")
	}

	good := originSource("good.example", honest, honest)
	c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	r2 := c2.OpenWith(good, rangedOpts)
	defer r2.Close()
	got, err := readBlob(r2, 700)
	if err != nil || !bytes.Equal(got, honest) {
		t.Fatalf("honest registry over the shared disk tier: got %d bytes (equal %v), %v; want the honest bytes", len(got), bytes.Equal(got, honest), err)
	}
	if h := c2.Stats().Disk.Hits; h != 0 {
		t.Errorf("disk hits of the honest registry: got %d, want 0 (nothing of the evil one is shared)", h)
	}
}

// A pass that verifies a blob moves its blocks under the digest, where
// another host's reader finds them (and every later fetch is vetted).
func TestTrustVerifiedShared(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	honest := randomBytes(6*bs+10, 2)
	a := originSource("a.example", honest, honest)
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	readAll(t, c, a, honest)
	waitIdle(t, c)
	c.Close() // waits for the promotion
	if got := blockFiles(t, dir, a.key); len(got) != 7 {
		t.Errorf("blocks under the digest after a verified pass: got %v, want 7", got)
	}
	if got := blockFiles(t, dir, KeyOf(a)); len(got) != 0 {
		t.Errorf("blocks left under the host's key: got %v, want none", got)
	}

	b := originSource("b.example", honest, flipped(honest, bs)) // lies, but is never asked
	c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	readAll(t, c2, b, honest)
	if n := b.calls.Load(); n != 0 {
		t.Errorf("source reads of another host with the blob verified on disk: got %d, want 0", n)
	}
	c2.Close()

	// The block digests outlive the process: a block evicted from disk and
	// fetched again from a lying host is refused.
	must(t, os.Remove(filepath.Join(dir, blockRel(a.key, bs, 4))))
	c3 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	r3 := c3.OpenWith(b, rangedOpts)
	defer r3.Close()
	if _, err := r3.ReadAt(context.Background(), make([]byte, 10), 4*bs); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("refetch of a verified block from a lying host in a new Cache: got %v, want ErrDigestMismatch", err)
	}
}

// The digest check cannot be bypassed: a whole-blob stream of wrong bytes
// fails the blob when its hash is known, every block of it is dropped, and
// no later read (a ranged refetch of the last block among them) succeeds.
func TestTrustMismatchFailsBlob(t *testing.T) {
	const bs = 1024
	for _, tc := range []struct {
		name   string
		stream bool // wrong bytes on the whole-blob stream, honest ranges
	}{
		{"wrong stream, honest ranges", true},
		{"wrong ranges", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			honest := randomBytes(12*bs+5, 3)
			src := &streamingSource{fakeSource: originSource("evil.example", honest, honest)}
			if tc.stream {
				src.mangle = func(r io.Reader) (io.ReadCloser, error) {
					b, _ := io.ReadAll(r)
					return io.NopCloser(bytes.NewReader(flipped(b, bs))), nil
				}
			} else {
				src.data = flipped(honest, bs)
			}
			c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir, Logger: quietLogger()})
			r := c.Open(src)
			defer r.Close()
			_, err := readBlob(r, 64<<10)
			if !errors.Is(err, ErrDigestMismatch) {
				// The stream's reader may see the pass break first; the
				// next in-order read completes it.
				_, err = readBlob(r, bs)
			}
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("whole read of wrong bytes: got %v, want ErrDigestMismatch", err)
			}
			for _, off := range []int64{0, 5 * bs, 12 * bs} {
				p := make([]byte, 10)
				if n, err := r.ReadAt(context.Background(), p, off); !errors.Is(err, ErrDigestMismatch) {
					t.Errorf("read at %d after the mismatch: got %d bytes, %v; want ErrDigestMismatch", off, n, err)
				}
			}
			r2 := c.Open(src)
			defer r2.Close()
			if _, err := r2.ReadAt(context.Background(), make([]byte, 10), 12*bs); !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("new reader's read of the last block: got %v, want ErrDigestMismatch", err)
			}
			r.Close()
			r2.Close()
			waitIdle(t, c)
			if n := c.Stats().Memory.Blocks; n != 0 {
				t.Errorf("memory blocks after the mismatch: got %d, want 0", n)
			}
			c.Close()
			if got := append(blockFiles(t, dir, src.key), blockFiles(t, dir, KeyOf(src))...); len(got) != 0 {
				t.Errorf("disk blocks after the mismatch: got %v, want none", got)
			}
		})
	}
}

// Once verified, a block fetched again (evicted) is checked against its
// block digest: a registry lying on that refetch fails the blob.
func TestTrustRefetchVetted(t *testing.T) {
	const bs = 1024
	honest := randomBytes(40*bs, 4)
	src := originSource("evil.example", honest, bytes.Clone(honest))
	c := newTestCache(t, Options{BlockSize: bs, MemoryBytes: 4 * bs, Readahead: -1})
	r := c.OpenWith(src, rangedOpts)
	defer r.Close()
	if got, err := readBlob(r, bs); err != nil || !bytes.Equal(got, honest) {
		t.Fatalf("honest pass: %v", err)
	}
	src.data[3*bs] ^= 0xff // block 3 was evicted by now
	p := make([]byte, bs)
	if _, err := r.ReadAt(context.Background(), p, 3*bs); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("refetch of a verified block with other bytes: got %v, want ErrDigestMismatch", err)
	}
}

// VerifyStrict: a read in the middle of a blob not verified yet waits for
// a verified pass; wrong bytes are never served.
func TestTrustStrict(t *testing.T) {
	const bs = 1024
	honest := randomBytes(9*bs+1, 5)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"honest", honest},
		{"wrong bytes", flipped(honest, bs)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &streamingSource{fakeSource: originSource("r.example", honest, tc.data)}
			c := newTestCache(t, Options{BlockSize: bs, Verify: VerifyStrict})
			r := c.Open(src)
			defer r.Close()
			p := make([]byte, 100)
			n, err := r.ReadExact(context.Background(), p, 4*bs+10)
			if bytes.Equal(tc.data, honest) {
				if err != nil || !bytes.Equal(p[:n], honest[4*bs+10:4*bs+110]) {
					t.Fatalf("strict read of an honest blob: got %d bytes, %v", n, err)
				}
				return
			}
			if !errors.Is(err, ErrDigestMismatch) || n != 0 {
				t.Fatalf("strict read of wrong bytes: got %d bytes, %v; want 0, ErrDigestMismatch", n, err)
			}
		})
	}
	v1 := &fakeSource{key: "v1:r.example/abc", data: honest, origin: blobio.Origin{Host: "r.example"}}
	c := newTestCache(t, Options{BlockSize: bs, Verify: VerifyStrict})
	r := c.OpenWith(v1, rangedOpts)
	defer r.Close()
	if _, err := r.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, ErrUnverifiable) {
		t.Errorf("strict read of a blob without digest: got %v, want ErrUnverifiable", err)
	}
}

// A disk block file swapped with its neighbour keeps a valid trailer for
// its old place: it is refused and removed, never served.
func TestDiskSwappedBlockRefused(t *testing.T) {
	const bs = 1024
	dir := t.TempDir()
	src := newFakeSource(keyN(90), 4*bs, 90)
	c := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	readAll(t, c, src, src.data)
	waitIdle(t, c)
	c.Close()
	a := filepath.Join(dir, blockRel(src.key, bs, 1))
	b := filepath.Join(dir, blockRel(src.key, bs, 2))
	da, err := os.ReadFile(a)
	must(t, err)
	db, err := os.ReadFile(b)
	must(t, err)
	must(t, os.WriteFile(a, db, 0o644))
	must(t, os.WriteFile(b, da, 0o644))

	c2 := newTestCache(t, Options{BlockSize: bs, DiskDir: dir})
	again := &fakeSource{key: src.key, data: src.data}
	readAll(t, c2, again, src.data)
	if got := c2.Stats().Disk.Corrupt; got != 2 {
		t.Errorf("corrupt disk blocks after the swap: got %d, want 2", got)
	}
	if got := again.calls.Load(); got == 0 {
		t.Error("source reads after the swap: got none, want the two blocks fetched again")
	}
}

// An unstamped disk tier holding data (an older layout) is cleared when
// opened, never read.
func TestDiskOldLayoutCleared(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, blocksDirName, escapeName(keyN(91)), "1024_0.blk")
	must(t, os.MkdirAll(filepath.Dir(old), 0o755))
	must(t, os.WriteFile(old, []byte("old layout block"), 0o644))
	newTestCache(t, Options{BlockSize: 1024, DiskDir: dir})
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("block of the old layout: got stat err %v, want it removed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, layoutStamp)); err != nil {
		t.Errorf("layout stamp: %v", err)
	}
}
