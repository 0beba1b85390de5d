package mounttest

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/registry/registrytest"
)

// lsLong is `ls -l dir`: the listing and an lstat of every entry.
func lsLong(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	var names []string
	for _, e := range es {
		if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
			t.Errorf("ls -l %s: %v", dir, err)
		}
		names = append(names, e.Name())
	}
	return names
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

// TestListingsCostWhatTheyShow, against the reference registry: `ls -l` of
// a directory of 3,000 repositories asks no repository for its tags and
// resolves no manifest; `ls -l` of a repository's _tags/ asks for its tag
// list and resolves no manifest either, so one stalled manifest delays
// nothing; the tag's directory resolves when it is read.
func TestListingsCostWhatTheyShow(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	ctx := context.Background()
	const repos, tags = 3000, 500
	p := registrytest.NewPusher(r)
	if err := registrytest.PushTinyRepos(ctx, p, numbered("many/r", repos), []string{"latest"}, 8); err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTinyRepos(ctx, p, []string{"tagged/repo"}, numbered("v", tags), 8); err != nil {
		t.Fatal(err)
	}
	proxy := registrytest.StartFaultProxy(t, r.URL)
	stall := proxy.StallHeaders(10*time.Minute, 0, registrytest.PathContains("/manifests/v00007"))
	mnt := mount(t, proxy.Host, mountOpts{})
	count := func(what string) int {
		n := 0
		for _, q := range proxy.Requests() {
			if strings.Contains(q.Path, what) {
				n++
			}
		}
		return n
	}

	proxy.ResetStats()
	if got := lsLong(t, filepath.Join(mnt, "many")); len(got) != repos || got[0] != "r00000" {
		t.Errorf("ls -l many: got %d names, want %d repositories", len(got), repos)
	}
	if got := lsLong(t, mnt); !slices.Equal(got, []string{"many", "tagged"}) {
		t.Errorf("ls -l /: got %v", got)
	}
	if n, m := count("/tags/list"), count("/manifests/"); n != 0 || m != 0 {
		t.Errorf("ls -l of %d repositories: got %d tag list and %d manifest requests, want none", repos, n, m)
	}

	proxy.ResetStats()
	if got := lsLong(t, filepath.Join(mnt, "tagged/repo/_tags")); len(got) != tags || got[7] != "v00007" {
		t.Errorf("ls -l tagged/repo/_tags: got %d names, want %d", len(got), tags)
	}
	lsLong(t, filepath.Join(mnt, "tagged"))
	if _, err := os.Stat(filepath.Join(mnt, "tagged/repo:v00007")); err != nil {
		t.Errorf("stat tagged/repo:v00007 (its manifest stalls): %v", err)
	}
	if n, m := count("/tags/list"), count("/manifests/"); n == 0 || m != 0 {
		t.Errorf("ls -l of %d tags: got %d tag list and %d manifest requests, want some and none", tags, n, m)
	}
	if got := readdir(t, filepath.Join(mnt, "tagged/repo/_tags/v00042")); !slices.Equal(got, []string{"config.json", "image.tar", "manifest.json", "oci"}) {
		t.Errorf("ls _tags/v00042: got %v", got)
	}
	if m := count("/manifests/"); m == 0 {
		t.Errorf("reading a tag's directory: no manifest request")
	}
	if stall.Hits() != 0 {
		t.Errorf("the stalled manifest was asked for %d times, want never", stall.Hits())
	}
}

// TestOverlongNameListed: through the kernel, a tar entry named over 255
// bytes is left out of its directory, which lists the rest (it made `ls`
// of the directory fail with EIO).
func TestOverlongNameListed(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	long := strings.Repeat("y", 300)
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: []registrytest.Entry{
		registrytest.Dir("d"), registrytest.File("d/"+long, "long"), registrytest.File("d/ok", "ok"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(r).PushImage(context.Background(), "test/long", img, "latest"); err != nil {
		t.Fatal(err)
	}
	mnt := mount(t, r.Host, mountOpts{})
	for _, dir := range []string{"test/long:latest/rootfs/d", "test/long/_tags/latest/layers/" + chainIDs(img.DiffIDs)[0] + "/fs/d"} {
		if got := readdir(t, filepath.Join(mnt, dir)); !slices.Equal(got, []string{"ok"}) {
			t.Errorf("ls %s: got %v, want [ok]", dir, got)
		}
	}
}

// TestManyLayers, against the reference registry: `ls -l layers` of an
// image of 10,000 layers (one small blob repeated: distinct chain IDs)
// asks for no blob, and every layer's directory is there.
func TestManyLayers(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	const n = 10000
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: []registrytest.Entry{registrytest.File("f", "x")}})
	if err != nil {
		t.Fatal(err)
	}
	layers := make([]*registrytest.Layer, n)
	for i := range layers {
		layers[i] = l
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(r).PushImage(context.Background(), "test/layers", img, "latest"); err != nil {
		t.Fatal(err)
	}
	proxy := registrytest.StartFaultProxy(t, r.URL)
	mnt := mount(t, proxy.Host, mountOpts{})
	got := lsLong(t, filepath.Join(mnt, "test/layers:latest/layers"))
	want := chainIDs(img.DiffIDs)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ls -l layers: got %d names, want the %d chain IDs", len(got), len(want))
	}
	// Names only: a stat of layer.tar may wait for the layer's size.
	if _, err := os.ReadDir(filepath.Join(mnt, "test/layers:latest/layers", want[n/2])); err != nil {
		t.Fatal(err)
	}
	blobs := 0
	for _, q := range proxy.Requests() {
		if strings.Contains(q.Path, "/blobs/") && q.Path != "/v2/test/layers/blobs/"+img.ConfigDigest.String() {
			blobs++
		}
	}
	if blobs != 0 {
		t.Errorf("ls -l layers: got %d layer blob requests, want none", blobs)
	}
}

// TestEndlessCatalog: over a registry whose catalog pages never end, `ls`
// of the mount fails with EIO once the listing passes its bounds, instead
// of growing until the timeout.
func TestEndlessCatalog(t *testing.T) {
	needFUSE(t)
	srv := registrytest.StartEndlessLister(t, 1000)
	mnt := mount(t, srv.Host, mountOpts{})
	_, err := os.ReadDir(mnt)
	if errnoOf(err) != syscall.EIO {
		t.Errorf("ls of an endless catalog: got %v, want EIO", err)
	}
	if pages := srv.Pages(); pages > 2000 {
		t.Errorf("ls of an endless catalog: %d pages asked for, want the listing bounded", pages)
	}
}

// TestLsLongAsksNoXattrs, with coreutils ls: regfs's own directories and
// files answer getxattr with ENOTSUP, so `ls -l` stops asking after the
// first entry (ENODATA made it ask every entry for security.selinux and
// two POSIX ACLs: three FUSE round trips each, 15,000 for 5,000 tags); a
// file of an image's rootfs still has xattrs to ask for (ENODATA).
func TestLsLongAsksNoXattrs(t *testing.T) {
	needFUSE(t)
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skipf("no ls: %v", err)
	}
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	ctx := context.Background()
	const tags = 50
	if err := registrytest.PushTinyRepos(ctx, registrytest.NewPusher(r), []string{"tagged/repo"}, numbered("v", tags), 8); err != nil {
		t.Fatal(err)
	}
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: []registrytest.Entry{registrytest.File("f", "x")}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(r).PushImage(ctx, "test/x", img, "latest"); err != nil {
		t.Fatal(err)
	}
	mnt := mount(t, r.Host, mountOpts{})

	out, err := exec.Command(ls, "-l", filepath.Join(mnt, "tagged/repo/_tags")).CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != tags+1 || !strings.HasPrefix(lines[1], "dr-xr-xr-x") {
		t.Errorf("ls -l _tags: %v, got %d lines (want total + %d), first %q", err, len(lines), tags, lines[:min(2, len(lines))])
	}
	buf := make([]byte, 256)
	for _, p := range []string{"", "tagged", "tagged/repo", "tagged/repo/_tags", "tagged/repo/_tags/v00007", "test/x:latest", "test/x:latest/manifest.json"} {
		if _, err := unix.Lgetxattr(filepath.Join(mnt, p), "security.selinux", buf); err != unix.ENOTSUP {
			t.Errorf("getxattr security.selinux of /%s: got %v, want ENOTSUP", p, err)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "test/x:latest/rootfs/f"), "security.selinux", buf); err != unix.ENODATA {
		t.Errorf("getxattr security.selinux of a rootfs file: got %v, want ENODATA", err)
	}
}

// fuseOps counts the FUSE requests go-fuse's debug output names, by
// opcode ("rx 12: READDIRPLUS n1 ...").
type fuseOps struct {
	mu  sync.Mutex
	ops map[string]int
}

func (c *fuseOps) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(string(p), "\n") {
		if _, rest, ok := strings.Cut(line, "rx "); ok {
			if f := strings.Fields(rest); len(f) > 1 {
				c.ops[f[1]]++
			}
		}
	}
	return len(p), nil
}

func (c *fuseOps) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := c.ops
	c.ops = map[string]int{}
	return ops
}

// TestListingAttributesWhenAsked, with coreutils ls: a listing nobody
// stats (`ls`, os.ReadDir) gets its attributes with the first batch of
// entries only (READDIRPLUS makes a lookup and an inode per entry, about
// 3× a plain READDIR); `ls -l` still gets every entry's attributes with
// the listing, with no LOOKUP or GETATTR per entry.
func TestListingAttributesWhenAsked(t *testing.T) {
	needFUSE(t)
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skipf("no ls: %v", err)
	}
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	const repos = 1000
	if err := registrytest.PushTinyRepos(context.Background(), registrytest.NewPusher(r), numbered("many/r", repos), []string{"latest"}, 8); err != nil {
		t.Fatal(err)
	}
	ops := &fuseOps{ops: map[string]int{}}
	prev := log.Writer()
	log.SetOutput(ops) // go-fuse's debug output
	t.Cleanup(func() { log.SetOutput(prev) })
	mnt := mount(t, r.Host, mountOpts{debug: true})
	dir := filepath.Join(mnt, "many")
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}

	ops.take()
	if es, err := os.ReadDir(dir); err != nil || len(es) != repos {
		t.Fatalf("ls many: %d names, %v; want %d", len(es), err, repos)
	}
	got := ops.take()
	if got["READDIRPLUS"] > 1 || got["READDIR"] == 0 {
		t.Errorf("ls of %d repositories: %d READDIRPLUS and %d READDIR requests, want at most 1 and some", repos, got["READDIRPLUS"], got["READDIR"])
	}

	// `ls -l` on a fresh mount: no entry is looked up on its own.
	mnt = mount(t, r.Host, mountOpts{debug: true})
	dir = filepath.Join(mnt, "many")
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	ops.take()
	out, err := exec.Command(ls, "-l", dir).Output()
	if n := strings.Count(string(out), "\n") - 1; err != nil || n != repos {
		t.Fatalf("ls -l many: %d lines, %v; want %d", n, err, repos)
	}
	got = ops.take()
	if n := got["LOOKUP"] + got["GETATTR"]; n > 10 || got["READDIRPLUS"] == 0 {
		t.Errorf("ls -l of %d repositories: %d LOOKUP and GETATTR requests and %d READDIRPLUS, want none per entry and some", repos, n, got["READDIRPLUS"])
	}
}

// TestListingStreamsPages: a listing hands the kernel each catalog or tag
// list page as it arrives. Shown here by a registry that fails every
// page but the first: the names of the first page list, then the listing
// fails (it failed with nothing listed when it waited for the whole list).
func TestListingStreamsPages(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	const repos, tags, page = 250, 250, 100
	p := registrytest.NewPusher(r)
	ctx := context.Background()
	if err := registrytest.PushTinyRepos(ctx, p, numbered("r", repos), []string{"latest"}, 8); err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTinyRepos(ctx, p, []string{"tagged/repo"}, numbered("v", tags), 8); err != nil {
		t.Fatal(err)
	}
	proxy := registrytest.StartFaultProxy(t, r.URL)
	mnt := mount(t, proxy.Host, mountOpts{pageSize: page})
	laterPages := func(r *http.Request) bool { return strings.Contains(r.URL.RawQuery, "last=") }
	partial := func(dir, first string) {
		t.Helper()
		fail := proxy.FailStatus(http.StatusBadRequest, "", 1000, laterPages)
		defer fail.Remove()
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		es, err := f.ReadDir(-1)
		if err == nil || len(es) < page || es[0].Name() != first || fail.Hits() == 0 {
			t.Errorf("ls %s, every page but the first failing: %d names (first %v), %v; want the first page's %d, then an error", dir, len(es), es[:min(1, len(es))], err, page)
		}
	}

	partial(mnt, "r00000")
	dir := filepath.Join(mnt, "tagged/repo/_tags")
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	partial(dir, "v00000")
	if es, err := os.ReadDir(dir); err != nil || len(es) != tags {
		t.Errorf("ls %s once the pages answer: %d names, %v; want %d", dir, len(es), err, tags)
	}
}
