package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

var (
	amd64 = registry.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = registry.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// harness is a tree over a memClient, driven by direct node calls (no
// mount): what the kernel would ask, without the kernel.
type harness struct {
	t        *testing.T
	c        *memClient
	root     *Root
	small    testImage
	amd, arm testImage
	multi    *registry.Image
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return l
}

func newHarness(t *testing.T, tweak func(*Options)) *harness {
	t.Helper()
	c := newMemClient()
	h := &harness{t: t, c: c}
	h.small = c.addImage(t, "test/small", "latest", amd64,
		[]testFile{{name: "etc/", typ: '5'}, {name: "etc/os-release", body: "NAME=small\n"}},
		[]testFile{{name: "bin/", typ: '5'}, {name: "bin/hello", body: strings.Repeat("hello world\n", 5000)}})
	h.amd = c.addImage(t, "test/multi", "", amd64, []testFile{{name: "arch", body: "amd64\n"}})
	h.arm = c.addImage(t, "test/multi", "", arm64, []testFile{{name: "arch", body: "arm64\n"}})
	h.multi = c.addIndex(t, "test/multi", "latest", h.amd, h.arm)
	c.addImage(t, "alpine", "3", amd64, []testFile{{name: "a", body: "a"}})
	c.addImage(t, "test/deep/nested/repo", "v1", amd64, []testFile{{name: "d", body: "d"}})

	h.root = h.newRoot(newSession(t, session.Options{Client: c}), tweak)
	return h
}

// newRoot is a root over s, with the harness's options changed by tweak.
func (h *harness) newRoot(s *session.Session, tweak func(*Options)) *Root {
	h.t.Helper()
	opts := Options{Session: s, Platform: amd64, Log: quietLog()}
	if tweak != nil {
		tweak(&opts)
	}
	root, err := NewRoot(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	gofs.NewNodeFS(root.top, &gofs.Options{})
	return root
}

// newSession wires o as a mount does (index builds detached).
func newSession(t *testing.T, o session.Options) *session.Session {
	t.Helper()
	o.DetachIndexBuilds = true
	s, err := session.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *harness) walk(path string) (*gofs.Inode, fuse.EntryOut, syscall.Errno) {
	h.t.Helper()
	in := h.root.top.EmbeddedInode()
	var out fuse.EntryOut
	for _, name := range strings.Split(strings.Trim(path, "/"), "/") {
		if name == "" {
			continue
		}
		l, ok := in.Operations().(gofs.NodeLookuper)
		if !ok {
			return nil, out, syscall.ENOTDIR
		}
		out = fuse.EntryOut{}
		ch, errno := l.Lookup(context.Background(), name, &out)
		if errno != 0 {
			return nil, out, errno
		}
		in.AddChild(name, ch, true)
		in = ch
	}
	return in, out, 0
}

func (h *harness) mustWalk(path string) (*gofs.Inode, fuse.EntryOut) {
	h.t.Helper()
	in, out, errno := h.walk(path)
	if errno != 0 {
		h.t.Fatalf("lookup %s: got %v, want success", path, errno)
	}
	return in, out
}

func (h *harness) readdir(path string) []string {
	h.t.Helper()
	in, _ := h.mustWalk(path)
	names, errno := listDir(in)
	if errno != 0 {
		h.t.Fatalf("readdir %s: %v", path, errno)
	}
	return names
}

// listDir reads in's listing as go-fuse does: through its directory handle
// when it has one (READDIR answers until one is empty; sorted here, as it
// comes in the registry's order), else its Readdir.
func listDir(in *gofs.Inode) ([]string, syscall.Errno) {
	ctx := context.Background()
	var names []string
	if o, ok := in.Operations().(gofs.NodeOpendirHandler); ok {
		fh, _, errno := o.OpendirHandle(ctx, 0)
		if errno != 0 {
			return nil, errno
		}
		rd := fh.(gofs.FileReaddirenter)
		for answer := 1; answer > 0; {
			answer = 0
			for {
				e, errno := rd.Readdirent(ctx)
				if errno != 0 {
					return names, errno
				}
				if e == nil {
					break
				}
				names = append(names, e.Name)
				answer++
			}
		}
		slices.Sort(names)
		return names, 0
	}
	ds, errno := in.Operations().(gofs.NodeReaddirer).Readdir(ctx)
	if errno != 0 {
		return nil, errno
	}
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return names, errno
		}
		names = append(names, e.Name)
	}
	return names, 0
}

// open opens path read-only and returns a function reading at an offset.
func (h *harness) open(path string) (read func(off int64, n int) ([]byte, syscall.Errno), flags uint32, release func()) {
	h.t.Helper()
	in, _ := h.mustWalk(path)
	ops := in.Operations()
	fh, flags, errno := ops.(gofs.NodeOpener).Open(context.Background(), syscall.O_RDONLY)
	if errno != 0 {
		h.t.Fatalf("open %s: %v", path, errno)
	}
	read = func(off int64, n int) ([]byte, syscall.Errno) {
		buf := make([]byte, n)
		var rr fuse.ReadResult
		if fr, ok := fh.(gofs.FileReader); ok {
			rr, errno = fr.Read(context.Background(), buf, off)
		} else {
			rr, errno = ops.(gofs.NodeReader).Read(context.Background(), fh, buf, off)
		}
		if errno != 0 {
			return nil, errno
		}
		b, st := rr.Bytes(buf)
		if !st.Ok() {
			return nil, syscall.Errno(st)
		}
		return bytes.Clone(b), 0
	}
	release = func() {
		if r, ok := fh.(gofs.FileReleaser); ok {
			r.Release(context.Background())
		}
	}
	return read, flags, release
}

func (h *harness) readFile(path string) []byte {
	h.t.Helper()
	read, _, release := h.open(path)
	defer release()
	var all []byte
	for {
		b, errno := read(int64(len(all)), 100_000)
		if errno != 0 {
			h.t.Fatalf("read %s at %d: %v", path, len(all), errno)
		}
		if len(b) == 0 {
			return all
		}
		all = append(all, b...)
	}
}

func (h *harness) attr(path string) fuse.Attr {
	h.t.Helper()
	in, _ := h.mustWalk(path)
	var out fuse.AttrOut
	if errno := in.Operations().(gofs.NodeGetattrer).Getattr(context.Background(), nil, &out); errno != 0 {
		h.t.Fatalf("getattr %s: %v", path, errno)
	}
	return out.Attr
}

func sameStrings(got, want []string) bool {
	return fmt.Sprint(got) == fmt.Sprint(want)
}

func TestListings(t *testing.T) {
	h := newHarness(t, nil)
	layerIDs := func(img *registry.Image) []string {
		var ids []string
		for _, l := range img.Layers {
			ids = append(ids, l.ID)
		}
		sort.Strings(ids)
		return ids
	}
	tests := []struct {
		path string
		want []string
	}{
		// Listing repositories costs the catalog alone: tags are listed in
		// a repository's _tags/, and <repo>:<tag> resolves on lookup.
		{"/", []string{"alpine", "test"}},
		{"/test", []string{"deep", "multi", "small"}},
		{"/test/deep", []string{"nested"}},
		{"/test/deep/nested", []string{"repo"}},
		{"/test/deep/nested/repo", []string{"_digests", "_tags"}},
		{"/test/deep/nested/repo/_tags", []string{"v1"}},
		{"/test/deep/nested/repo/_digests", nil},
		{"/alpine/_tags", []string{"3"}},
		{"/test/small/_tags", []string{"latest"}},
		{"/test/multi/_tags", []string{"latest"}},
		{"/test/small/_tags/latest", []string{"ancestry", "config.json", "image.tar", "json", "layers", "manifest.json", "oci", "rootfs"}},
		{"/test/small:latest", []string{"ancestry", "config.json", "image.tar", "json", "layers", "manifest.json", "oci", "rootfs"}},
		{"/test/small:latest/layers", layerIDs(h.small.img)},
		{"/test/small:latest/layers/" + h.small.img.Layers[0].ID, []string{"blob", "digest", "fs", "json", "layer.tar"}},
		{"/test/multi:latest", []string{"ancestry", "config.json", "image.tar", "index.json", "json", "layers", "manifest.json", "oci", "platforms", "rootfs"}},
		{"/test/multi:latest/platforms", []string{"linux-amd64", "linux-arm64-v8"}},
		{"/test/multi:latest/platforms/linux-arm64-v8", []string{"ancestry", "config.json", "image.tar", "json", "layers", "manifest.json", "oci", "rootfs"}},
	}
	for _, tc := range tests {
		if got := h.readdir(tc.path); !sameStrings(got, tc.want) {
			t.Errorf("readdir %s: got %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestImageFiles(t *testing.T) {
	h := newHarness(t, nil)
	img := h.small.img
	dgst := "/test/small@" + img.ManifestDigest.String()
	anc, _ := json.Marshal(img.Ancestry())
	top := img.Layers[len(img.Layers)-1]
	tests := []struct {
		path string
		want []byte
	}{
		{"/test/small:latest/manifest.json", img.Manifest},
		{dgst + "/manifest.json", img.Manifest},
		{"/test/small:latest/config.json", h.small.config},
		{"/test/small:latest/ancestry", anc},
		{"/test/small:latest/json", top.JSON},
		{"/test/small:latest/layers/" + top.ID + "/json", top.JSON},
		{"/test/small:latest/layers/" + top.ID + "/digest", []byte(top.Digest.String() + "\n")},
		{"/test/multi:latest/index.json", h.multi.Index},
		{"/test/multi:latest/manifest.json", h.amd.img.Manifest},
		{"/test/multi:latest/config.json", h.amd.config},
		{"/test/multi:latest/platforms/linux-arm64-v8/config.json", h.arm.config},
		{"/test/multi:latest/platforms/linux-amd64/manifest.json", h.amd.img.Manifest},
	}
	for _, tc := range tests {
		if got := h.readFile(tc.path); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.path, got, tc.want)
		}
		a := h.attr(tc.path)
		if a.Size != uint64(len(tc.want)) || a.Mode != fuse.S_IFREG|0o444 {
			t.Errorf("%s: got size %d mode %o, want %d %o", tc.path, a.Size, a.Mode, len(tc.want), fuse.S_IFREG|0o444)
		}
		if a.Mtime != uint64(img.Created.Unix()) {
			t.Errorf("%s: got mtime %d, want %d", tc.path, a.Mtime, img.Created.Unix())
		}
	}
	sum := sha256.Sum256(h.readFile(dgst + "/manifest.json"))
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != img.ManifestDigest.String() {
		t.Errorf("sha256 of manifest.json: got %s, want %s", got, img.ManifestDigest)
	}
	if a := h.attr("/test/small:latest"); a.Mode != fuse.S_IFDIR|0o555 {
		t.Errorf("image dir mode: got %o, want %o", a.Mode, fuse.S_IFDIR|0o555)
	}
}

func TestLookupErrors(t *testing.T) {
	h := newHarness(t, nil)
	h.c.failWith["test/denied"] = fmt.Errorf("GET tags: %w", registry.ErrUnauthorized)
	h.c.failWith["test/broken"] = fmt.Errorf("GET tags: connection reset")
	h.c.images["test/denied"] = nil
	h.c.images["test/broken"] = nil
	tests := []struct {
		path string
		want syscall.Errno
	}{
		{"/nosuch", syscall.ENOENT},
		{"/test/nosuch", syscall.ENOENT},
		{"/test/small:nosuch", syscall.ENOENT},
		{"/test/nosuch:latest", syscall.ENOENT},
		{"/test/small@sha256:" + strings.Repeat("0", 64), syscall.ENOENT},
		{"/test/small@sha256:short", syscall.ENOENT},
		{"/test/small:bad/tag", syscall.ENOENT},
		{"/Upper", syscall.ENOENT},
		{"/.git", syscall.ENOENT},
		{"/test/small:latest/nosuch", syscall.ENOENT},
		{"/test/small:latest/index.json", syscall.ENOENT},
		{"/test/small:latest/layers/nosuch", syscall.ENOENT},
		{"/test/multi:latest/platforms/linux-s390x", syscall.ENOENT},
		{"/test/denied:latest", syscall.EACCES},
		{"/test/broken:latest", syscall.EIO},
	}
	for _, tc := range tests {
		if _, _, got := h.walk(tc.path); got != tc.want {
			t.Errorf("lookup %s: got %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestNamesResolveWithoutCatalog(t *testing.T) {
	h := newHarness(t, nil)
	h.c.noCatalog = true
	if got := h.readdir("/"); len(got) != 0 {
		t.Errorf("readdir / without catalog: got %v, want nothing", got)
	}
	h.mustWalk("/test/small:latest/manifest.json")
	h.mustWalk("/alpine:3")
	if got := h.readdir("/"); !sameStrings(got, []string{"test"}) {
		t.Errorf("readdir / after lookups: got %v, want [test]", got)
	}
	if _, _, errno := h.walk("/test/small:nosuch"); errno != syscall.ENOENT {
		t.Errorf("unknown tag without catalog: got %v, want ENOENT", errno)
	}
	// A repository's own directory shows its names: its tag list says it
	// is one.
	if got := h.readdir("/test/small"); !sameStrings(got, []string{"_digests", "_tags"}) {
		t.Errorf("readdir /test/small without catalog: got %v, want [_digests _tags]", got)
	}
	if got := h.readdir("/test/small/_tags"); !sameStrings(got, []string{"latest"}) {
		t.Errorf("readdir /test/small/_tags without catalog: got %v, want [latest]", got)
	}
	if got := h.readdir("/test/deep"); len(got) != 0 {
		t.Errorf("readdir /test/deep without catalog: got %v, want nothing (not a repository)", got)
	}
}

func TestDigestResolvesUnlisted(t *testing.T) {
	h := newHarness(t, nil)
	for _, p := range []string{
		"/test/multi@" + h.arm.img.ManifestDigest.String() + "/config.json",
		"/test/multi@" + h.multi.IndexDigest.String() + "/index.json",
	} {
		h.mustWalk(p)
	}
	got := h.readFile("/test/multi@" + h.multi.IndexDigest.String() + "/config.json")
	if !bytes.Equal(got, h.amd.config) {
		t.Errorf("index by digest shows the --platform config: got %q, want %q", got, h.amd.config)
	}
}

func TestPlatformChoice(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Platform = arm64 })
	if got := h.readFile("/test/multi:latest/config.json"); !bytes.Equal(got, h.arm.config) {
		t.Errorf("--platform linux/arm64/v8: got config %q, want %q", got, h.arm.config)
	}
	h2 := newHarness(t, func(o *Options) { o.Platform = registry.Platform{OS: "linux", Architecture: "s390x"} })
	if got := h2.readdir("/test/multi:latest"); !sameStrings(got, []string{"index.json", "oci", "platforms"}) {
		t.Errorf("no matching platform: got %v, want [index.json platforms]", got)
	}
}

func TestInodes(t *testing.T) {
	h := newHarness(t, nil)
	byTag, _ := h.mustWalk("/test/small:latest")
	byDigest, _ := h.mustWalk("/test/small@" + h.small.img.ManifestDigest.String())
	if byTag.StableAttr().Ino == byDigest.StableAttr().Ino {
		t.Errorf("tag and digest directories share inode %d; directories must not alias", byTag.StableAttr().Ino)
	}
	f1, _ := h.mustWalk("/test/small:latest/config.json")
	f2, _ := h.mustWalk("/test/small@" + h.small.img.ManifestDigest.String() + "/config.json")
	if f1.StableAttr().Ino != f2.StableAttr().Ino {
		t.Errorf("config.json by tag and by digest: got inodes %d and %d, want one", f1.StableAttr().Ino, f2.StableAttr().Ino)
	}
	// A fresh tree gives the same numbers: they hash identities.
	h2 := newHarness(t, nil)
	g1, _ := h2.mustWalk("/test/small:latest/config.json")
	if g1.StableAttr().Ino != f1.StableAttr().Ino {
		t.Errorf("inode across trees: got %d, want %d", g1.StableAttr().Ino, f1.StableAttr().Ino)
	}
}

func TestTimeouts(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.TagTTL = 7 * time.Second })
	_, out := h.mustWalk("/test/small:latest")
	if got := out.EntryTimeout(); got != 7*time.Second {
		t.Errorf("tag entry timeout: got %v, want 7s", got)
	}
	_, out = h.mustWalk("/test/small@" + h.small.img.ManifestDigest.String())
	if got := out.EntryTimeout(); got != immutableTTL {
		t.Errorf("digest entry timeout: got %v, want %v", got, immutableTTL)
	}
	_, out = h.mustWalk("/test/small:latest/layers/" + h.small.img.Layers[0].ID + "/blob")
	if got := out.AttrTimeout(); got != immutableTTL {
		t.Errorf("blob attr timeout: got %v, want %v", got, immutableTTL)
	}
	_, flags, release := h.open("/test/small:latest/manifest.json")
	release()
	if flags&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Errorf("manifest.json open flags %#x: want FOPEN_KEEP_CACHE", flags)
	}
}

func TestWritesAreReadOnly(t *testing.T) {
	h := newHarness(t, nil)
	for _, p := range []string{
		"/test/small:latest/manifest.json",
		"/test/small:latest/layers/" + h.small.img.Layers[0].ID + "/blob",
		"/test/small:latest/layers/" + h.small.img.Layers[0].ID + "/layer.tar",
	} {
		for _, fl := range []uint32{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC} {
			in, _ := h.mustWalk(p)
			if _, _, errno := in.Operations().(gofs.NodeOpener).Open(context.Background(), fl); errno != syscall.EROFS {
				t.Errorf("open %s flags %#x: got %v, want EROFS", p, fl, errno)
			}
		}
	}
}

func testBlobs(t *testing.T, h *harness) {
	for i, l := range h.small.img.Layers {
		p := "/test/small:latest/layers/" + l.ID + "/blob"
		want := h.small.blobs[i]
		got := h.readFile(p)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, want %d (sequential)", p, len(got), len(want))
		}
		if a := h.attr(p); a.Size != uint64(len(want)) {
			t.Errorf("%s size: got %d, want %d", p, a.Size, len(want))
		}
		read, _, release := h.open(p)
		rng := rand.New(rand.NewSource(int64(i)))
		for k := 0; k < 50; k++ {
			off := rng.Int63n(int64(len(want)))
			n := 1 + rng.Intn(9000)
			b, errno := read(off, n)
			end := min(off+int64(n), int64(len(want)))
			if errno != 0 || !bytes.Equal(b, want[off:end]) {
				t.Fatalf("%s at %d+%d: got %d bytes (%v), want %d", p, off, n, len(b), errno, end-off)
			}
		}
		if b, errno := read(int64(len(want)), 10); errno != 0 || len(b) != 0 {
			t.Errorf("%s read at end: got %d bytes %v, want 0", p, len(b), errno)
		}
		release()
	}
}

func TestBlobReadsDirect(t *testing.T) {
	testBlobs(t, newHarness(t, nil))
}

func TestBlobReadsThroughCache(t *testing.T) {
	cache, err := layercache.New(layercache.Options{BlockSize: 4096, MemoryBytes: 1 << 20, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	testBlobs(t, newHarness(t, func(o *Options) {
		o.Session = newSession(t, session.Options{Client: o.Session.Client(), Cache: cache})
	}))
}

func TestLayerTar(t *testing.T) {
	h := newHarness(t, nil)
	for i, l := range h.small.img.Layers {
		p := "/test/small:latest/layers/" + l.ID + "/layer.tar"
		read, flags, release := h.open(p)
		if flags&fuse.FOPEN_KEEP_CACHE == 0 {
			t.Errorf("%s: open flags %#x, want KEEP_CACHE once the size is known", p, flags)
		}
		want := h.small.tars[i]
		var got []byte
		for {
			b, errno := read(int64(len(got)), 10240)
			if errno != 0 {
				t.Fatalf("%s at %d: %v", p, len(got), errno)
			}
			if len(b) == 0 {
				break
			}
			got = append(got, b...)
		}
		release()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %d bytes, want the %d-byte decompressed blob", p, len(got), len(want))
		}
		if a := h.attr(p); a.Size != uint64(len(want)) {
			t.Errorf("%s size after open: got %d, want %d", p, a.Size, len(want))
		}
	}
}

func TestStatusDir(t *testing.T) {
	calls := 0
	h := newHarness(t, func(o *Options) {
		o.Status = &Status{Version: "v9", Config: map[string]string{"api": "v2"}, Stats: func() any { calls++; return map[string]int{"n": calls} }}
	})
	if got := h.readdir("/"); !sameStrings(got, []string{".regfs", "alpine", "test"}) {
		t.Errorf("readdir /: got %v", got)
	}
	if got := string(h.readFile("/.regfs/version")); got != "v9\n" {
		t.Errorf("version: got %q", got)
	}
	_, flags, release := h.open("/.regfs/stats")
	release()
	if flags&fuse.FOPEN_DIRECT_IO == 0 {
		t.Errorf("stats open flags %#x: want DIRECT_IO", flags)
	}
	var st map[string]any
	if err := json.Unmarshal(h.readFile("/.regfs/stats"), &st); err != nil || st["n"].(float64) < 2 {
		t.Errorf("stats: got %v (%v), want a fresh snapshot per open", st, err)
	}
}
