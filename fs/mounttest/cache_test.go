package mounttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry/registrytest"
)

// The disk cache through real mounts: each test starts its own registry (so
// request counts are its own) and runs the regfs binary, one process per
// mount, against a --cache-dir of its own.

// cacheBlock is the block size these tests mount with: the small fixtures'
// blobs then span several blocks.
const cacheBlock = 4 << 10

// cacheRegistry starts a registry with the small fixtures; its counters
// start at zero.
func cacheRegistry(t *testing.T) (*registrytest.Registry, *registrytest.Fixtures) {
	t.Helper()
	needFUSE(t)
	r := registrytest.StartRegistry(t)
	return r, registrytest.PushFixtures(t, r, registrytest.WithoutLarge())
}

// startCacheMount runs `regfs mount` on host with cacheDir and the test
// block size, like startRegfs (whose cleanup it shares) but on any host.
func startCacheMount(t *testing.T, host, cacheDir string, extra ...string) *regfsProc {
	t.Helper()
	needFUSE(t)
	p := &regfsProc{mnt: t.TempDir(), stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	args := append([]string{"mount", "--log-level", "warn", "--cache-dir", cacheDir,
		"--block-size", strconv.Itoa(cacheBlock)}, extra...)
	p.cmd = exec.Command(regfsBin, append(args, host, p.mnt)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		forceUnmount(p.mnt)
		p.cmd.Process.Kill()
	})
	waitFor(t, "the regfs mount", func() bool { return isFUSEMount(p.mnt) })
	return p
}

// stopCacheMount unmounts and waits for a clean exit, after which the
// process has flushed its disk cache.
func stopCacheMount(t *testing.T, p *regfsProc) {
	t.Helper()
	// The kernel may still hold a file the test closed (its release is
	// asynchronous): EBUSY is asked again, for a while.
	var out []byte
	var err error
	waitFor(t, "fusermount3 -u "+p.mnt+" without EBUSY", func() bool {
		out, err = exec.Command("fusermount3", "-u", p.mnt).CombinedOutput()
		return err == nil || !strings.Contains(string(out), "busy")
	})
	if err != nil {
		t.Fatalf("fusermount3 -u %s: %v: %s", p.mnt, err, out)
	}
	if err := p.waitExit(t); err != nil {
		t.Fatalf("regfs exit: got %v, want status 0; stderr:\n%s", err, p.stderr)
	}
}

// regfsCache runs `regfs cache ARGS... --cache-dir DIR`.
func regfsCache(dir string, args ...string) (string, error) {
	out, err := exec.Command(regfsBin, append(append([]string{"cache"}, args...), "--cache-dir", dir)...).CombinedOutput()
	return string(out), err
}

type cacheDu struct {
	Bytes      int64 `json:"bytes"`
	BlockBytes int64 `json:"block_bytes"`
	IndexBytes int64 `json:"index_bytes"`
	Blobs      int   `json:"blobs"`
	Blocks     int   `json:"blocks"`
	Files      int   `json:"files"`
}

func cacheDuOf(t *testing.T, dir string) cacheDu {
	t.Helper()
	out, err := regfsCache(dir, "du", "--json")
	if err != nil {
		t.Fatalf("regfs cache du: %v: %s", err, out)
	}
	var du cacheDu
	if err := json.Unmarshal([]byte(out), &du); err != nil {
		t.Fatalf("regfs cache du --json: %v in %q", err, out)
	}
	return du
}

// cachedBlobs is `regfs cache ls --json`: blob key → cached data bytes.
func cachedBlobs(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out, err := regfsCache(dir, "ls", "--json")
	if err != nil {
		t.Fatalf("regfs cache ls: %v: %s", err, out)
	}
	var l struct {
		Blobs []layercache.BlobUsage `json:"blobs"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("regfs cache ls --json: %v in %q", err, out)
	}
	m := map[string]int64{}
	for _, b := range l.Blobs {
		m[b.Key] = b.DataBytes
	}
	return m
}

// wholeBlobsCached waits until the cache at dir holds every byte of the
// layers (a mount may still be writing its last blocks).
func wholeBlobsCached(t *testing.T, dir string, layers []*registrytest.Layer) {
	t.Helper()
	waitFor(t, "the blobs in the disk cache", func() bool {
		got := cachedBlobs(t, dir)
		for _, l := range layers {
			if got[l.Digest.String()] != l.Size {
				return false
			}
		}
		return true
	})
}

func isBlobGET(q registrytest.Request) bool {
	return q.Method == "GET" && strings.Contains(q.Path, "/blobs/")
}

// mountStats is .regfs/stats, if the mount has one.
type mountStats struct {
	Cache layercache.Stats `json:"cache"`
}

func readMountStats(t *testing.T, mnt string) (mountStats, bool) {
	t.Helper()
	var st mountStats
	b, err := os.ReadFile(filepath.Join(mnt, ".regfs", "stats"))
	if err != nil {
		t.Logf(".regfs/stats: %v (not checked)", err)
		return st, false
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Errorf(".regfs/stats: %v in %q", err, b)
		return st, false
	}
	return st, true
}

// blobPaths are the paths of an image's layer blobs in a mount, base first.
func blobPaths(mnt, ref string, img *registrytest.Image) []string {
	var out []string
	for _, id := range chainIDs(img.DiffIDs) {
		out = append(out, filepath.Join(mnt, ref, "layers", id, "blob"))
	}
	return out
}

// readBlobs reads every layer blob of img through the mount and checks it
// hashes to its digest; it returns the bytes read.
func readBlobs(t *testing.T, mnt, ref string, img *registrytest.Image) int64 {
	t.Helper()
	var n int64
	for i, p := range blobPaths(mnt, ref, img) {
		if got, want := sha256File(t, p), img.Layers[i].Digest; got != want {
			t.Errorf("%s: got sha256 %s, want %s", p, got, want)
		}
		n += img.Layers[i].Size
	}
	return n
}

// rootfsFile picks a regular file of img's merged tree with some content,
// if the mount has rootfs/.
func rootfsFile(t *testing.T, mnt, ref string, img *registrytest.Image) (path string, want []byte) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(mnt, ref, "rootfs")); err != nil {
		t.Logf("no rootfs/ in %s (%v): rootfs reads not checked", ref, err)
		return "", nil
	}
	const name = "var/lib/data.bin"
	e, ok := img.RootFS()[name]
	if !ok || len(e.Data()) == 0 {
		t.Fatalf("fixture %s has no %s with content", ref, name)
	}
	return filepath.Join(mnt, ref, "rootfs", name), e.Data()
}

func TestCacheSecondMountNoRequests(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const ref = "test/small:latest"

	p1 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p1.mnt, ref, fx.Small)
	rootfs, want := rootfsFile(t, p1.mnt, ref, fx.Small)
	if rootfs != "" {
		if got := readFile(t, rootfs); !bytes.Equal(got, want) {
			t.Errorf("%s (first mount): got %d bytes, want the fixture's %d", rootfs, len(got), len(want))
		}
	}
	stopCacheMount(t, p1)
	first := r.Stats()
	if got := r.CountRequests(isBlobGET); got == 0 {
		t.Fatalf("first mount: got 0 blob GETs, want the blobs fetched")
	}
	cached := cachedBlobs(t, dir)
	for _, l := range fx.Small.Layers {
		if cached[l.Digest.String()] != l.Size {
			t.Errorf("after the first mount: cache ls shows %d bytes of %s, want all %d", cached[l.Digest.String()], l.Digest, l.Size)
		}
	}
	du := cacheDuOf(t, dir)
	if rootfs != "" && du.IndexBytes == 0 {
		t.Errorf("after reading rootfs/: cache du shows no index bytes, want the layer indexes persisted")
	}

	// A fresh process on the same cache: lookups may fetch metadata, the
	// reads of cached content must fetch nothing at all.
	p2 := startCacheMount(t, r.Host, dir)
	paths := blobPaths(p2.mnt, ref, fx.Small)
	if rootfs != "" {
		rootfs = strings.Replace(rootfs, p1.mnt, p2.mnt, 1)
		paths = append(paths, rootfs)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	metadata := r.Stats().Requests - first.Requests
	blobGETsBefore := r.CountRequests(isBlobGET)
	before, logged := r.Stats().Requests, len(r.Requests())
	if rootfs != "" {
		if got := readFile(t, rootfs); !bytes.Equal(got, want) {
			t.Errorf("%s (second mount): got %d bytes, want the fixture's %d", rootfs, len(got), len(want))
		}
		// The persisted indexes answer: an index pass would have read
		// every block of every layer, one file needs part of one layer.
		var all int64
		for _, l := range fx.Small.Layers {
			all += (l.Size + cacheBlock - 1) / cacheBlock
		}
		st, ok := readMountStats(t, p2.mnt)
		t.Logf("second mount: one rootfs file read %d of the image's %d blocks from disk", st.Cache.Disk.Hits, all)
		if ok && st.Cache.Disk.Hits >= all {
			t.Errorf(".regfs/stats after reading one rootfs file: got %d disk block hits, want fewer than the %d blocks of all layers (persisted indexes, no index pass)", st.Cache.Disk.Hits, all)
		}
	}
	readBlobs(t, p2.mnt, ref, fx.Small)
	if got := r.Stats().Requests - before; got != 0 {
		t.Errorf("second mount, reading cached blobs (and rootfs file %q): got %d registry requests, want 0:\n%+v",
			rootfs, got, r.Requests()[logged:])
	}
	if got := r.CountRequests(isBlobGET) - blobGETsBefore; got != 0 {
		t.Errorf("second mount: got %d blob GETs, want 0", got)
	}
	t.Logf("second mount: %d metadata requests for the lookups (ping, manifest, config), 0 for the reads", metadata)
	if st, ok := readMountStats(t, p2.mnt); ok {
		if st.Cache.BytesFetched != 0 || st.Cache.SourceRequests != 0 {
			t.Errorf(".regfs/stats of the second mount: got %d bytes fetched in %d requests, want 0", st.Cache.BytesFetched, st.Cache.SourceRequests)
		}
		if st.Cache.Disk.Hits == 0 {
			t.Errorf(".regfs/stats of the second mount: got 0 disk hits, want the blocks read from disk")
		}
		// A warm re-read is served by the kernel page cache or the memory
		// tier; it still fetches nothing.
		readBlobs(t, p2.mnt, ref, fx.Small)
		if st2, ok := readMountStats(t, p2.mnt); ok && st2.Cache.BytesFetched != 0 {
			t.Errorf(".regfs/stats after a warm re-read: got %d bytes fetched, want 0", st2.Cache.BytesFetched)
		}
	}
	stopCacheMount(t, p2)
}

func TestCacheSharedByConcurrentMounts(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const ref = "test/compress:none"
	img := fx.Plain

	p1 := startCacheMount(t, r.Host, dir)
	p2 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p1.mnt, ref, img)
	wholeBlobsCached(t, dir, img.Layers)
	if got := r.CountRequests(isBlobGET); got == 0 {
		t.Fatalf("first mount: got 0 blob GETs, want the blobs fetched")
	}
	for _, p := range blobPaths(p2.mnt, ref, img) {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	before := r.CountRequests(isBlobGET)
	readBlobs(t, p2.mnt, ref, img)
	if got := r.CountRequests(isBlobGET) - before; got != 0 {
		t.Errorf("second mount reading what the first fetched: got %d blob GETs, want 0", got)
	}
	if st, ok := readMountStats(t, p2.mnt); ok {
		if st.Cache.BytesFetched != 0 || st.Cache.Disk.Hits == 0 {
			t.Errorf(".regfs/stats of the second mount: got %d bytes fetched, %d disk hits; want 0 fetched, > 0 hits", st.Cache.BytesFetched, st.Cache.Disk.Hits)
		}
	}
	if st, ok := readMountStats(t, p1.mnt); ok {
		var want int64
		for _, l := range img.Layers {
			want += l.Size
		}
		if st.Cache.BytesFetched < want {
			t.Errorf(".regfs/stats of the first mount: got %d bytes fetched, want at least the %d read", st.Cache.BytesFetched, want)
		}
	}
}

func TestCacheDiskBound(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const bound = 64 << 10
	p := startCacheMount(t, r.Host, dir, "--disk-cache-size", strconv.Itoa(bound))
	var read int64
	for _, im := range []struct {
		ref string
		img *registrytest.Image
	}{
		{"test/small:latest", fx.Small},
		{"test/compress:zstd", fx.Zstd},
		{"test/compress:none", fx.Plain},
		{"test/compress:estargz", fx.EStargz},
		{"test/deep/nested/repo:v1", fx.Deep},
	} {
		read += readBlobs(t, p.mnt, im.ref, im.img)
	}
	if read < 3*bound {
		t.Fatalf("the test read %d bytes: want well over the %d-byte bound", read, bound)
	}
	if st, ok := readMountStats(t, p.mnt); ok && st.Cache.Disk.Evictions == 0 {
		t.Errorf(".regfs/stats: got 0 disk evictions after reading %d bytes through a %d-byte disk cache, want some", read, bound)
	}
	// What was evicted is fetched again, whole.
	readBlobs(t, p.mnt, "test/small:latest", fx.Small)
	stopCacheMount(t, p)
	if du := cacheDuOf(t, dir); du.Bytes > bound || du.Bytes == 0 {
		t.Errorf("regfs cache du after reading %d bytes: got %+v, want 0 < bytes <= %d", read, du, bound)
	}
	out, err := regfsCache(dir, "du", "--disk-cache-size", strconv.Itoa(bound))
	if err != nil || !strings.Contains(out, "% used") || strings.Contains(out, "over by") {
		t.Errorf("regfs cache du --disk-cache-size: got %q, %v; want it within the bound", out, err)
	}
}

// Issue 5: indexes (tar index, gzip checkpoints, eStargz TOCs) live in the
// cache directory and count against --disk-cache-size, like blocks.
func TestCacheDiskBoundCountsIndexes(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const bound = 64 << 10
	p := startCacheMount(t, r.Host, dir, "--disk-cache-size", strconv.Itoa(bound))
	if _, err := os.Stat(filepath.Join(p.mnt, "test/small:latest/rootfs")); err != nil {
		t.Skipf("no rootfs/: %v", err)
	}
	for _, ref := range []string{"test/small:latest", "test/compress:zstd", "test/compress:none", "test/compress:estargz", "test/deep/nested/repo:v1"} {
		if _, err := os.ReadDir(filepath.Join(p.mnt, ref, "rootfs")); err != nil {
			t.Errorf("ls %s/rootfs: %v", ref, err)
		}
		readBlobs(t, p.mnt, ref, fx.Images[ref])
	}
	stopCacheMount(t, p)
	if du := cacheDuOf(t, dir); du.Bytes > bound || du.IndexBytes == 0 {
		t.Errorf("regfs cache du after building indexes and reading blobs: got %+v, want 0 < index bytes, bytes <= %d", du, bound)
	}
}

// blockFiles are the disk cache's block files of blob digest hex, by
// block index (found by name: <block size>_<index>.blk under a directory
// named for the blob).
func blockFiles(t *testing.T, dir, hex string) map[int]string {
	t.Helper()
	out := map[int]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(filepath.Base(filepath.Dir(path)), hex) {
			return err
		}
		var bs, i int
		if n, _ := fmt.Sscanf(d.Name(), "%d_%d.blk", &bs, &i); n == 2 && bs == cacheBlock {
			out[i] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCacheTornBlockNeverServed(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const ref = "test/small:latest"
	// The largest layer: most blocks.
	li := 0
	for i, l := range fx.Small.Layers {
		if l.Size > fx.Small.Layers[li].Size {
			li = i
		}
	}
	layer := fx.Small.Layers[li]
	nblocks := int((layer.Size + cacheBlock - 1) / cacheBlock)
	if nblocks < 6 {
		t.Fatalf("layer %s has %d blocks of %d, want at least 6", layer.Digest, nblocks, cacheBlock)
	}

	p1 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p1.mnt, ref, fx.Small)
	stopCacheMount(t, p1)
	files := blockFiles(t, dir, layer.Digest.Encoded())
	if len(files) != nblocks {
		t.Fatalf("block files of %s: got %d, want %d", layer.Digest, len(files), nblocks)
	}

	// What a killed writer or a bad disk may leave. Every damaged block
	// must be refetched; no other block may be.
	damage := map[int]func(path string) error{
		1: func(p string) error { return os.Truncate(p, cacheBlock/2) }, // torn
		2: func(p string) error { // one bit flipped, size intact
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[100] ^= 0x10
			return os.WriteFile(p, b, 0o644)
		},
		3: func(p string) error { // the right length of garbage, no trailer
			return os.WriteFile(p, bytes.Repeat([]byte{0xA5}, cacheBlock+16), 0o644)
		},
		4: func(p string) error { return os.Truncate(p, 0) },
		5: func(p string) error { // a dead writer's temp file, and no block
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(filepath.Dir(p), ".tmp-killed"), b[:len(b)/3], 0o644); err != nil {
				return err
			}
			return os.Remove(p)
		},
	}
	for i, f := range damage {
		if err := f(files[i]); err != nil {
			t.Fatal(err)
		}
	}

	p2 := startCacheMount(t, r.Host, dir)
	path := blobPaths(p2.mnt, ref, fx.Small)[li]
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	before := len(r.Requests())
	if got := sha256File(t, path); got != layer.Digest {
		t.Fatalf("blob with damaged cache blocks: got sha256 %s, want %s", got, layer.Digest)
	}
	refetched := map[int]bool{}
	for _, q := range r.Requests()[before:] {
		if !isBlobGET(q) {
			continue
		}
		var a, z int64
		if n, _ := fmt.Sscanf(q.Range, "bytes=%d-%d", &a, &z); n != 2 {
			t.Errorf("blob GET without a block range: %+v", q)
			continue
		}
		for b := a / cacheBlock; b <= z/cacheBlock; b++ {
			refetched[int(b)] = true
		}
	}
	var got, want []int
	for b := range refetched {
		got = append(got, b)
	}
	for b := range damage {
		want = append(want, b)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("blocks refetched: got %v, want exactly the damaged %v", got, want)
	}
	if st, ok := readMountStats(t, p2.mnt); ok && st.Cache.Disk.Corrupt < 4 {
		t.Errorf(".regfs/stats: got %d corrupt disk blocks, want the 4 damaged files counted", st.Cache.Disk.Corrupt)
	}
	stopCacheMount(t, p2)
	if got := cachedBlobs(t, dir)[layer.Digest.String()]; got != layer.Size {
		t.Errorf("after the refetch: the cache holds %d bytes of %s, want all %d again", got, layer.Digest, layer.Size)
	}
}

func TestCacheClear(t *testing.T) {
	r, fx := cacheRegistry(t)
	dir := t.TempDir()
	const ref = "test/small:latest"

	p1 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p1.mnt, ref, fx.Small)
	wholeBlobsCached(t, dir, fx.Small.Layers)

	// A live mount on the directory: refused, naming the mount.
	out, err := regfsCache(dir, "clear")
	if err == nil || !strings.Contains(out, p1.mnt) || !strings.Contains(out, "--force") {
		t.Errorf("regfs cache clear with %s mounted: got %v, %q; want a refusal naming it and --force", p1.mnt, err, out)
	}
	if du := cacheDuOf(t, dir); du.Blobs != len(fx.Small.Layers) {
		t.Errorf("after a refused clear: got %d blobs cached, want %d", du.Blobs, len(fx.Small.Layers))
	}
	// Another directory is not in use.
	if out, err := regfsCache(t.TempDir(), "clear"); err != nil {
		t.Errorf("regfs cache clear of a directory no mount uses: %v: %s", err, out)
	}
	// Forced under the live mount: it keeps serving right bytes.
	if out, err := regfsCache(dir, "clear", "--force"); err != nil {
		t.Fatalf("regfs cache clear --force: %v: %s", err, out)
	}
	if du := cacheDuOf(t, dir); du.Bytes != 0 {
		t.Errorf("after clear --force: got %+v, want empty", du)
	}
	readBlobs(t, p1.mnt, ref, fx.Small)
	stopCacheMount(t, p1)

	// Refill, then clear with nothing mounted.
	p2 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p2.mnt, ref, fx.Small)
	stopCacheMount(t, p2)
	if du := cacheDuOf(t, dir); du.Blobs != len(fx.Small.Layers) {
		t.Fatalf("after a mount read %d blobs: got %+v", len(fx.Small.Layers), du)
	}
	if out, err := regfsCache(dir, "clear"); err != nil || !strings.Contains(out, "cleared") {
		t.Fatalf("regfs cache clear: got %v, %q", err, out)
	}
	if du := cacheDuOf(t, dir); du.Bytes != 0 || du.Blobs != 0 || du.Files != 0 {
		t.Errorf("regfs cache du after clear: got %+v, want nothing", du)
	}

	// The next mount fetches again.
	p3 := startCacheMount(t, r.Host, dir)
	before := r.CountRequests(isBlobGET)
	readBlobs(t, p3.mnt, ref, fx.Small)
	if got := r.CountRequests(isBlobGET) - before; got < len(fx.Small.Layers) {
		t.Errorf("a mount after clear: got %d blob GETs, want at least one per layer (%d)", got, len(fx.Small.Layers))
	}
	if st, ok := readMountStats(t, p3.mnt); ok && st.Cache.Disk.Hits != 0 {
		t.Errorf(".regfs/stats after clear: got %d disk hits, want 0", st.Cache.Disk.Hits)
	}
	stopCacheMount(t, p3)
}
