package fs

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/regfs/regfs/registry"
)

// lsLong is what `ls -l DIR` asks: the listing, then a lookup and the
// attributes of every entry.
func (h *harness) lsLong(path string) []string {
	h.t.Helper()
	names := h.readdir(path)
	for _, name := range names {
		p := strings.TrimSuffix(path, "/") + "/" + name
		h.mustWalk(p)
		h.attr(p)
	}
	return names
}

// TestListingReposAsksNoTags: `ls -l` of a directory of repositories costs
// the catalog: no repository is asked for its tags, no tag resolved.
func TestListingReposAsksNoTags(t *testing.T) {
	h := newHarness(t, nil)
	const repos = 3000
	for i := range repos {
		h.c.images[fmt.Sprintf("many/r%04d", i)] = map[string]*registry.Image{"latest": h.small.img}
	}
	h.c.tagCalls.Store(0)
	h.c.resolves.Store(0)
	got := h.lsLong("/many")
	if len(got) != repos || got[0] != "r0000" {
		t.Errorf("ls /many: got %d names from %v, want %d repositories", len(got), got[:min(3, len(got))], repos)
	}
	h.lsLong("/")
	if n, m, c := h.c.tagCalls.Load(), h.c.resolves.Load(), h.c.catalogCalls.Load(); n != 0 || m != 0 || c != 1 {
		t.Errorf("ls -l of %d repositories: got %d tag lists, %d resolves and %d catalogs asked for, want 0, 0, 1", repos, n, m, c)
	}
	// A repository's own directory lists its names; its tags cost one list.
	if got := h.lsLong("/many/r0042"); !sameStrings(got, []string{"_digests", "_tags"}) {
		t.Errorf("ls /many/r0042: got %v", got)
	}
	if got := h.lsLong("/many/r0042/_tags"); !sameStrings(got, []string{"latest"}) {
		t.Errorf("ls /many/r0042/_tags: got %v", got)
	}
	if n, m := h.c.tagCalls.Load(), h.c.resolves.Load(); n != 1 || m != 0 {
		t.Errorf("ls -l of _tags: got %d tag lists and %d resolves, want 1 and 0", n, m)
	}
}

// TestListingTagsResolvesNothing: `ls -l` of a repository's tags asks for
// its tag list once and resolves no tag, so one stalled manifest cannot
// delay it; an image directory resolves when it is itself read.
func TestListingTagsResolvesNothing(t *testing.T) {
	h := newHarness(t, nil)
	const tags = 5000
	h.c.mu.Lock()
	for i := range tags {
		h.c.images["test/small"][fmt.Sprintf("v%04d", i)] = h.small.img
	}
	h.c.mu.Unlock()
	h.c.tagCalls.Store(0)
	h.c.resolves.Store(0)
	got := h.lsLong("/test/small/_tags")
	if len(got) != tags+1 {
		t.Errorf("ls _tags: got %d names, want %d", len(got), tags+1)
	}
	for _, name := range []string{"small:v0001", "small:latest"} {
		if a := h.attr("/test/" + name); a.Mode != fuse.S_IFDIR|0o555 {
			t.Errorf("stat /test/%s: mode %o", name, a.Mode)
		}
	}
	if n, m := h.c.tagCalls.Load(), h.c.resolves.Load(); n != 1 || m != 0 {
		t.Errorf("ls -l of %d tags: got %d tag lists and %d resolves, want 1 and 0", tags, n, m)
	}
	if got := h.readdir("/test/small/_tags/v0042"); !sameStrings(got, []string{"ancestry", "config.json", "image.tar", "json", "layers", "manifest.json", "oci", "rootfs"}) {
		t.Errorf("ls _tags/v0042: got %v", got)
	}
	if m := h.c.resolves.Load(); m != 1 {
		t.Errorf("reading one tag's directory: got %d resolves, want 1", m)
	}
}

// TestRepoNameDirs: _tags/<tag>/ is <repo>:<tag>/ and _digests/<alg>-<hex>/
// is <repo>@<alg>:<hex>/ (same files, same file inodes); neither exists
// beside a name that is not a repository.
func TestRepoNameDirs(t *testing.T) {
	h := newHarness(t, nil)
	img := h.small.img
	dg := img.ManifestDigest
	pairs := [][2]string{
		{"/test/small:latest/manifest.json", "/test/small/_tags/latest/manifest.json"},
		{"/test/small@" + dg.String() + "/manifest.json", "/test/small/_digests/sha256-" + dg.Encoded() + "/manifest.json"},
		{"/test/multi:latest/platforms/linux-arm64-v8/config.json", "/test/multi/_tags/latest/platforms/linux-arm64-v8/config.json"},
		{"/test/small:latest/layers/" + img.Layers[1].ID + "/digest", "/test/small/_tags/latest/layers/" + img.Layers[1].ID + "/digest"},
	}
	for _, p := range pairs {
		a, b := h.readFile(p[0]), h.readFile(p[1])
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("%s: got %q, want %q as %s", p[1], b, a, p[0])
		}
		inA, _ := h.mustWalk(p[0])
		inB, _ := h.mustWalk(p[1])
		if inA.StableAttr().Ino != inB.StableAttr().Ino {
			t.Errorf("%s and %s: different inodes", p[0], p[1])
		}
	}
	if got := h.readFile("/test/small/_digests/sha256-" + dg.Encoded() + "/manifest.json"); digest.FromBytes(got) != dg {
		t.Errorf("_digests manifest.json: digest %s, want %s", digest.FromBytes(got), dg)
	}
	for _, p := range []string{
		"/_tags", "/_digests", "/test/_tags", "/test/deep/_digests", "/test/nosuch/_tags",
		"/test/small/_tags/nosuch", "/test/small/_tags/bad:tag",
		"/test/small/_digests/sha256-" + strings.Repeat("0", 64), "/test/small/_digests/sha256:" + dg.Encoded(),
		"/test/small/_digests/latest", "/test/small/_other",
	} {
		if _, _, errno := h.walk(p); errno != syscall.ENOENT {
			t.Errorf("lookup %s: got %v, want ENOENT", p, errno)
		}
	}
}

// TestManyLayersListCheaply: an image of 10,000 layers lists its layers
// without a fetch, and a lookup of one layer costs a constant, not a
// list of every layer (which made `ls -l layers` quadratic).
func TestManyLayersListCheaply(t *testing.T) {
	h := newHarness(t, nil)
	const layers = 10000
	img := *h.small.img
	img.Layers = nil
	for i := range layers {
		l := h.small.img.Layers[0]
		l.ID = digest.FromString(fmt.Sprint(i)).Encoded()
		img.Layers = append(img.Layers, l)
	}
	h.c.mu.Lock()
	h.c.images["test/small"]["many"] = &img
	h.c.mu.Unlock()
	h.c.blobOpens.Store(0)
	got := h.readdir("/test/small:many/layers")
	if len(got) != layers {
		t.Fatalf("ls layers: got %d, want %d", len(got), layers)
	}
	dir, _ := h.mustWalk("/test/small:many/layers")
	lookup := dir.Operations().(gofs.NodeLookuper)
	allocs := testing.AllocsPerRun(50, func() {
		var out fuse.EntryOut
		if _, errno := lookup.Lookup(context.Background(), got[layers/2], &out); errno != 0 {
			t.Fatalf("lookup layer: %v", errno)
		}
	})
	if allocs > 100 {
		t.Errorf("lookup of one of %d layers: %.0f allocations, want a constant (< 100)", layers, allocs)
	}
	for _, id := range got[:100] {
		h.attr("/test/small:many/layers/" + id)
	}
	if n := h.c.blobOpens.Load(); n != 0 {
		t.Errorf("ls -l layers: got %d blob opens, want none", n)
	}
}

// TestOverlongNamesSkipped: a tar entry, tag or repository name no lookup
// could reach (over 255 bytes, or not a valid name) is left out of its
// listing, which lists the rest instead of failing.
func TestOverlongNamesSkipped(t *testing.T) {
	h := newHarness(t, nil)
	long := strings.Repeat("x", 300)
	h.c.addImage(t, "test/longnames", "latest", amd64, []testFile{
		{name: "d/", typ: '5'}, {name: "d/" + long, body: "long"}, {name: "d/ok", body: "ok"},
	})
	h.c.mu.Lock()
	h.c.images["test/longnames"][strings.Repeat("t", 200)] = h.small.img // over the tag grammar's 128
	h.c.images["test/"+long] = map[string]*registry.Image{"latest": h.small.img}
	h.c.images["test/Upper"] = map[string]*registry.Image{"latest": h.small.img}
	h.c.mu.Unlock()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/test/longnames:latest/rootfs/d", []string{"ok"}},
		{"/test/longnames:latest/layers/" + h.c.images["test/longnames"]["latest"].Layers[0].ID + "/fs/d", []string{"ok"}},
		{"/test/longnames/_tags", []string{"latest"}},
		{"/test", []string{"deep", "longnames", "multi", "small"}},
	} {
		if got := h.readdir(tc.path); !sameStrings(got, tc.want) {
			t.Errorf("readdir %s: got %v, want %v", tc.path, got, tc.want)
		}
	}
}

// TestListTooLong: a catalog stopped at its bounds (a registry whose pages
// never end) is EIO with one log line per listing, and is not walked again
// for the tag TTL.
func TestListTooLong(t *testing.T) {
	log, hook := test.NewNullLogger()
	h := newHarness(t, func(o *Options) { o.Log = log })
	h.c.catalogErr = fmt.Errorf("catalog of mem.test: stopped at page 1049: %w", registry.ErrListTooLong)
	for i := range 2 {
		in, _ := h.mustWalk("/")
		if _, errno := listDir(in); errno != syscall.EIO {
			t.Errorf("readdir / #%d: got %v, want EIO", i+1, errno)
		}
	}
	if n := h.c.catalogCalls.Load(); n != 1 {
		t.Errorf("got %d catalog walks, want 1 (the answer kept for the tag TTL)", n)
	}
	lines := 0
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel && strings.Contains(e.Message, "stopped at page") {
			lines++
		}
	}
	if lines != 2 {
		t.Errorf("got %d log lines naming the cause, want one per listing (2)", lines)
	}
}

// TestListingHandleLooksUpListedNames: READDIRPLUS's lookup of any name the
// listing handed out (go-fuse replays an interrupted answer's names) is
// answered by the listing itself: no tag is resolved, even with the tag
// list no longer cached (a TTL of 1ns here; a list still arriving too).
func TestListingHandleLooksUpListedNames(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.TagTTL = time.Nanosecond })
	in, _ := h.mustWalk("/test/small/_tags")
	fh, _, errno := in.Operations().(gofs.NodeOpendirHandler).OpendirHandle(context.Background(), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	var names []string
	for {
		e, errno := fh.(gofs.FileReaddirenter).Readdirent(context.Background())
		if errno != 0 || e == nil {
			break
		}
		names = append(names, e.Name)
	}
	h.c.resolves.Store(0)
	for _, name := range names {
		var out fuse.EntryOut
		if _, errno := fh.(gofs.FileLookuper).Lookup(context.Background(), name, &out); errno != 0 || out.Mode&syscall.S_IFDIR == 0 {
			t.Errorf("lookup %s through the listing: %v, mode %o", name, errno, out.Mode)
		}
	}
	if len(names) == 0 || h.c.resolves.Load() != 0 {
		t.Errorf("lookups of %v through the listing: %d resolves, want some names and none", names, h.c.resolves.Load())
	}
}
