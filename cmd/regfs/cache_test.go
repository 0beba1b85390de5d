package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/metastore"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
	"github.com/regfs/regfs/session"
)

// runCLI runs the regfs command line in this process.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// withMountTable points `cache clear` at a mount table of the test's own.
func withMountTable(t *testing.T, lines ...string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mounts")
	var table string
	for _, l := range lines {
		table += l + "\n"
	}
	if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	old := procMounts
	procMounts = path
	t.Cleanup(func() { procMounts = old })
}

// fakeMount is a directory that answers like a regfs mount's .regfs/config.
func fakeMount(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	if config != "" {
		if err := os.MkdirAll(filepath.Join(dir, ".regfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".regfs", "config"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const testBlockSize = 16 << 10

// filledCache fills a --cache-dir the way a mount does: blob blocks through
// layercache and layer indexes through layerindex, read from the real
// registry. It returns the dir, the blobs cached (key → size) and the
// number of layers indexed.
func filledCache(t *testing.T) (string, map[string]int64, int) {
	t.Helper()
	ctx := context.Background()
	reg := registrytest.StartRegistry(t)
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	dir := t.TempDir()
	meta, err := metastore.Open(metaStoreDir(dir), log)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := registry.New(ctx, reg.Host, registry.Options{API: registry.APIV2, PlainHTTP: true, Logger: logrus.NewEntry(log), Content: meta})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := session.New(session.Options{Client: rc, Meta: meta, Log: log}) // records what is resolved
	if err != nil {
		t.Fatal(err)
	}
	client := sess.Client()
	cache, err := layercache.New(layercache.Options{BlockSize: testBlockSize, DiskDir: diskTierDir(dir), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	index, err := layerindex.NewManager(layerindex.Options{Store: cache}) // as a mount does
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, ref := range []struct {
		repo, tag string
	}{{registrytest.RepoSmall, "latest"}, {registrytest.RepoCompress, "estargz"}} {
		img, err := client.Resolve(ctx, ref.repo, ref.tag, registry.Platform{OS: "linux", Architecture: "amd64"})
		if err != nil {
			t.Fatalf("resolve %s:%s: %v", ref.repo, ref.tag, err)
		}
		for _, l := range img.Layers {
			blob, err := client.OpenBlob(ctx, ref.repo, l)
			if err != nil {
				t.Fatal(err)
			}
			r := cache.Open(blob)
			buf := make([]byte, blob.Size())
			if _, err := r.ReadAt(ctx, buf, 0); err != nil {
				t.Fatalf("read %s: %v", blob.Key(), err)
			}
			if ref.repo == registrytest.RepoSmall {
				if _, err := index.Layer(blob.Key(), r, layerindex.LayerOptions{}).Index(ctx); err != nil {
					t.Fatalf("index %s: %v", blob.Key(), err)
				}
			}
			r.Close()
			want[blob.Key()] = blob.Size()
		}
	}
	if len(want) != len(fx.Small.Layers)+len(fx.EStargz.Layers) {
		t.Fatalf("cached %d blobs, want %d", len(want), len(fx.Small.Layers)+len(fx.EStargz.Layers))
	}
	return dir, want, len(fx.Small.Layers)
}

func TestCacheLsDuClear(t *testing.T) {
	dir, want, indexed := filledCache(t)
	withMountTable(t) // no mounts

	out, _, err := runCLI(t, "cache", "ls", "--cache-dir", dir, "--json")
	if err != nil {
		t.Fatalf("cache ls --json: %v", err)
	}
	var l cacheListing
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("cache ls --json: %v in %q", err, out)
	}
	if l.Dir != dir {
		t.Errorf("dir: got %q, want %q", l.Dir, dir)
	}
	var keys []string
	var total int64
	for _, b := range l.Blobs {
		keys = append(keys, b.Key)
		total += b.DiskBytes
		size, ok := want[b.Key]
		if !ok {
			t.Errorf("blob %s listed, but never read", b.Key)
			continue
		}
		if wantBlocks := int((size + testBlockSize - 1) / testBlockSize); b.Blocks != wantBlocks || b.DataBytes != size {
			t.Errorf("blob %s: got %d blocks, %d bytes; want %d blocks, %d bytes", b.Key, b.Blocks, b.DataBytes, wantBlocks, size)
		}
		if time.Since(b.LastUsed) > time.Hour || b.LastUsed.After(time.Now().Add(time.Minute)) {
			t.Errorf("blob %s: last used %v, want about now", b.Key, b.LastUsed)
		}
	}
	if len(l.Blobs) != len(want) || !sort.StringsAreSorted(keys) {
		t.Errorf("blobs: got %v, want the %d blobs read, sorted", keys, len(want))
	}
	small := registryHostOf(t, dir) + "/" + registrytest.RepoSmall + ":latest"
	for _, b := range l.Blobs {
		if len(b.Images) != 1 || !strings.HasSuffix(b.Images[0], ":latest") && !strings.HasSuffix(b.Images[0], ":estargz") {
			t.Errorf("blob %s: got images %q, want the one tag it was read through", b.Key, b.Images)
		}
	}
	kinds := map[string]int{}
	for _, f := range l.Files {
		kinds[f.Kind]++
		total += f.DiskBytes
		if f.DiskBytes <= 0 {
			t.Errorf("file %s: got %d bytes, want > 0", f.Name, f.DiskBytes)
		}
	}
	if kinds["tar-index"] != indexed {
		t.Errorf("files: got kinds %v, want %d tar-index files", kinds, indexed)
	}
	if l.Bytes != total {
		t.Errorf("bytes: got %d, want the sum of blobs and files, %d", l.Bytes, total)
	}

	out, _, err = runCLI(t, "cache", "ls", "--cache-dir", dir)
	if err != nil {
		t.Fatalf("cache ls: %v", err)
	}
	t.Logf("regfs cache ls:\n%s", out)
	for _, s := range []string{"BLOB", "BLOCKS", "LAST USED", "IMAGES", small, "INDEX FILE", "tar-index", keys[0], "ago)", dir} {
		if !strings.Contains(out, s) {
			t.Errorf("cache ls: got\n%s\nwant it to contain %q", out, s)
		}
	}

	out, _, err = runCLI(t, "cache", "ls", "--cache-dir", dir, "--json", "--sort", "size")
	if err != nil {
		t.Fatalf("cache ls --sort size: %v", err)
	}
	var bySize cacheListing
	if err := json.Unmarshal([]byte(out), &bySize); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(bySize.Blobs); i++ {
		if bySize.Blobs[i-1].DiskBytes < bySize.Blobs[i].DiskBytes {
			t.Errorf("--sort size: blob %d has %d bytes, blob %d has %d: want largest first", i-1, bySize.Blobs[i-1].DiskBytes, i, bySize.Blobs[i].DiskBytes)
		}
	}

	out, _, err = runCLI(t, "cache", "du", "--cache-dir", dir, "--json", "--disk-cache-size", "1K")
	if err != nil {
		t.Fatalf("cache du: %v", err)
	}
	var du cacheTotals
	if err := json.Unmarshal([]byte(out), &du); err != nil {
		t.Fatal(err)
	}
	if du.Bytes != l.Bytes || du.BlockBytes+du.IndexBytes != du.Bytes || du.Blobs != len(want) || du.LimitBytes != 1024 || !du.OverLimit {
		t.Errorf("cache du --json: got %+v, want %d bytes (blocks+indexes), %d blobs, limit 1024, over", du, l.Bytes, len(want))
	}
	out, _, err = runCLI(t, "cache", "du", "--cache-dir", dir, "--disk-cache-size", "1G")
	if err != nil || !strings.Contains(out, humanBytes(l.Bytes)+"\t"+dir) || !strings.Contains(out, "bound    1.0 GiB") {
		t.Errorf("cache du: got %q, %v; want the total, the dir and the bound", out, err)
	}

	// Something else that lives in the directory survives a clear.
	other := filepath.Join(dir, "not-ours")
	if err := os.WriteFile(other, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	// --keep-indexes: the blocks go, the indexes stay.
	out, _, err = runCLI(t, "cache", "clear", "--keep-indexes", "--cache-dir", dir)
	if err != nil || !strings.Contains(out, fmt.Sprintf("kept %d index files", indexed)) {
		t.Fatalf("cache clear --keep-indexes: got %q, %v; want %d index files kept", out, err, indexed)
	}
	out, _, err = runCLI(t, "cache", "du", "--cache-dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &du); err != nil || du.Blobs != 0 || du.BlockBytes != 0 || du.Files != indexed || du.IndexBytes == 0 {
		t.Errorf("cache du after clear --keep-indexes: got %+v (%v), want no blocks and %d index files", du, err, indexed)
	}
	if _, err := os.Stat(metaStoreDir(dir)); err != nil {
		t.Errorf("metadata after clear --keep-indexes: got %v, want it kept", err)
	}
	idxBytes := du.Bytes
	out, _, err = runCLI(t, "cache", "clear", "--cache-dir", dir)
	if err != nil || !strings.Contains(out, "cleared "+humanBytes(idxBytes)) {
		t.Fatalf("cache clear: got %q, %v; want it to report %s cleared", out, err, humanBytes(idxBytes))
	}
	out, _, err = runCLI(t, "cache", "du", "--cache-dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &du); err != nil || du.Bytes != 0 || du.Blobs != 0 || du.Files != 0 {
		t.Errorf("cache du after clear: got %+v (%v), want nothing", du, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file not the cache's own: got %v after clear, want it kept", err)
	}
	if _, err := os.Stat(metaStoreDir(dir)); !os.IsNotExist(err) {
		t.Errorf("metadata after clear: got %v, want it gone", err)
	}
	if out, _, err = runCLI(t, "cache", "ls", "--cache-dir", dir); err != nil || !strings.Contains(out, "empty") {
		t.Errorf("cache ls after clear: got %q, %v, want empty", out, err)
	}
}

func TestCacheMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "never-made")
	withMountTable(t)
	for _, args := range [][]string{
		{"cache", "ls", "--cache-dir", dir},
		{"cache", "du", "--cache-dir", dir},
		{"cache", "clear", "--cache-dir", dir},
	} {
		if out, _, err := runCLI(t, args...); err != nil {
			t.Errorf("regfs %v on a missing dir: got %v (%q), want success", args, err, out)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s: got created, want left alone", dir)
	}
}

func TestCacheClearActiveMount(t *testing.T) {
	dir := t.TempDir()
	c, err := layercache.New(layercache.Options{DiskDir: diskTierDir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutFile(context.Background(), "sha256:abc.test", []byte("cached")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	cfg := func(cacheDir string) string {
		b, _ := json.Marshal(map[string]any{"registry": "127.0.0.1:5000", "cache_dir": cacheDir})
		return string(b)
	}
	same, viaLink, other, noDisk := fakeMount(t, cfg(dir)), fakeMount(t, cfg(link)), fakeMount(t, cfg(t.TempDir())), fakeMount(t, cfg(""))
	relative, silent := fakeMount(t, cfg("rel/dir")), fakeMount(t, "")
	spaced := filepath.Join(t.TempDir(), "a b")
	if err := os.MkdirAll(filepath.Join(spaced, ".regfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spaced, ".regfs", "config"), []byte(cfg(dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	line := func(mnt, fstype string) string {
		return "88 27 0:52 / " + strings.ReplaceAll(mnt, " ", `\040`) + " ro,nosuid,nodev,relatime shared:44 - " + fstype + " 127.0.0.1:5000 ro,user_id=0,group_id=0"
	}
	for _, tc := range []struct {
		name        string
		table       []string
		force       bool
		wantRefused string // a mountpoint the refusal names; "" for success
		wantWarning string
	}{
		{"same dir", []string{line(other, "fuse.regfs"), line(same, "fuse.regfs")}, false, same, ""},
		{"through a symlink", []string{line(viaLink, "fuse.regfs")}, false, viaLink, ""},
		{"escaped mountpoint", []string{line(spaced, "fuse.regfs")}, false, spaced, ""},
		{"forced", []string{line(same, "fuse.regfs")}, true, "", ""},
		{"other dirs", []string{line(other, "fuse.regfs"), line(noDisk, "fuse.regfs")}, false, "", ""},
		{"not regfs", []string{line(same, "fuse.sshfs"), line(same, "ext4")}, false, "", ""},
		{"relative cache dir", []string{line(relative, "fuse.regfs")}, false, "", "relative"},
		{"no status dir", []string{line(silent, "fuse.regfs")}, false, "", "cannot tell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withMountTable(t, tc.table...)
			args := []string{"cache", "clear", "--cache-dir", dir}
			if tc.force {
				args = append(args, "--force")
			}
			out, errOut, err := runCLI(t, args...)
			if tc.wantRefused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantRefused) || !strings.Contains(err.Error(), "--force") {
					t.Errorf("cache clear: got %v (%q), want a refusal naming %s and --force", err, out, tc.wantRefused)
				}
				if u, _ := layercache.DiskUsage(context.Background(), diskTierDir(dir)); len(u.Files) != 1 {
					t.Errorf("after a refused clear: got %d files, want the 1 cached", len(u.Files))
				}
				return
			}
			if err != nil {
				t.Errorf("cache clear: got %v, want success", err)
			}
			if !strings.Contains(errOut, tc.wantWarning) {
				t.Errorf("stderr: got %q, want %q", errOut, tc.wantWarning)
			}
		})
	}
}

func TestCacheErrors(t *testing.T) {
	dir := t.TempDir()
	withMountTable(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cache", "ls", "--cache-dir", dir, "--sort", "colour"}, "--sort"},
		{[]string{"cache", "ls", "--cache-dir", ""}, "--cache-dir"},
		{[]string{"cache", "du", "--cache-dir", ""}, "--cache-dir"},
		{[]string{"cache", "clear", "--cache-dir", ""}, "--cache-dir"},
		{[]string{"cache", "du", "--cache-dir", dir, "--disk-cache-size", "lots"}, "disk-cache-size"},
		{[]string{"cache", "ls", "extra"}, "unknown command"},
	} {
		if _, _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("regfs %v: got %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	// An unreadable mount table: refuse, and say how to go on.
	procMounts = filepath.Join(dir, "no-such-table")
	if _, _, err := runCLI(t, "cache", "clear", "--cache-dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("cache clear without a mount table: got %v, want an error suggesting --force", err)
	}
	if _, _, err := runCLI(t, "cache", "clear", "--cache-dir", dir, "--force"); err != nil {
		t.Errorf("cache clear --force without a mount table: got %v, want success", err)
	}
	// A cache directory that is a file.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, _, err := runCLI(t, "cache", "ls", "--cache-dir", file); err == nil {
		t.Errorf("cache ls of a file: got success, want an error")
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{10 << 20, "10.0 MiB"}, {3 << 30, "3.0 GiB"}, {5 << 40, "5.0 TiB"}, {1 << 62, "4.0 EiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d): got %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestIndexKind(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"sha256_abc-0123.idx", "tar-index"},
		{"sha256_abc-0123.toc", "estargz-toc"},
		{".tmp-123", ""},
		{".hidden.idx", ""},
		{"notes.txt", ""},
	} {
		if got := indexKind(tc.name); got != tc.want {
			t.Errorf("indexKind(%q): got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRegfsMounts(t *testing.T) {
	dir := t.TempDir()
	write := func(name, table string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("mountinfo", `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
88 27 0:52 / /mnt/a\040b ro,nosuid,nodev - fuse.regfs 127.0.0.1:5000 ro,user_id=0
89 27 0:53 / /mnt/tab\011x ro - fuse.regfs ghcr.io ro
90 27 0:54 / /mnt/other rw - fuse.sshfs host rw
91 27 0:55 / /mnt/back\134slash ro - fuse.regfs odd ro
`)
	got, err := regfsMounts(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{"127.0.0.1:5000", "/mnt/a b", "fuse.regfs"},
		{"ghcr.io", "/mnt/tab\tx", "fuse.regfs"},
		{"odd", `/mnt/back\slash`, "fuse.regfs"},
	}
	if len(got) != len(want) {
		t.Fatalf("regfsMounts: got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// A table that is not the kernel's is an error (cache clear then
	// refuses without --force), never a guess.
	for name, table := range map[string]string{
		"short line":    "short line\n",
		"mounts format": "sysfs /sys sysfs rw,nosuid 0 0\n",
	} {
		if got, err := regfsMounts(write(strings.ReplaceAll(name, " ", "-"), table)); err == nil {
			t.Errorf("%s: got %+v, want an error", name, got)
		}
	}
	if _, err := regfsMounts(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a missing table: got no error")
	}
}

// registryHostOf is the registry the metadata store under dir has records
// of (filledCache's one registry).
func registryHostOf(t *testing.T, dir string) string {
	t.Helper()
	store, err := metastore.Open(metaStoreDir(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := store.Refs()
	if err != nil || len(refs) == 0 {
		t.Fatalf("metadata store: got %d records, %v; want some", len(refs), err)
	}
	return refs[0].Registry
}
