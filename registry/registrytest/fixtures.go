package registrytest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Repositories and tags of the standard fixture set.
const (
	RepoSmall    = "test/small"            // tags "latest" (OCI), "docker" (Docker schema2)
	RepoMulti    = "test/multi"            // tags "latest" (OCI index), "docker" (manifest list)
	RepoCompress = "test/compress"         // tags "zstd", "none", "estargz"
	RepoLarge    = "test/large"            // tag "latest"
	RepoDeep     = "test/deep/nested/repo" // tag "v1"
	RepoPaging   = "test/paging"           // tags "tag-00" … "tag-24"
)

// PagingTagCount is the number of tags on RepoPaging.
const PagingTagCount = 25

// FixtureConfig tunes the fixture set.
type FixtureConfig struct {
	// LargeSize is the content size of test/large's layer (default
	// DefaultLargeSize, 64 MiB); the gzip blob is about 70 % of it.
	LargeSize int64
	// LargeSeed seeds its content (default 1).
	LargeSeed uint64
	// SkipLarge leaves test/large out.
	SkipLarge bool
}

// FixtureOption changes a FixtureConfig.
type FixtureOption func(*FixtureConfig)

// WithLargeSize sets the content size of test/large (default 64 MiB).
func WithLargeSize(n int64) FixtureOption { return func(c *FixtureConfig) { c.LargeSize = n } }

// WithLargeSeed sets the seed of test/large's content (default 1).
func WithLargeSeed(seed uint64) FixtureOption { return func(c *FixtureConfig) { c.LargeSeed = seed } }

// WithoutLarge leaves test/large out of the set (pushing is then ~instant).
func WithoutLarge() FixtureOption { return func(c *FixtureConfig) { c.SkipLarge = true } }

// Fixtures is the standard set of test images, as built and pushed: every
// field holds the exact bytes and digests the registry has.
type Fixtures struct {
	// Host is the registry they were pushed to.
	Host string

	Small       *Image // test/small:latest, OCI, 3 gzip layers
	SmallDocker *Image // test/small:docker, same layers, Docker schema2
	Multi       *Index // test/multi:latest, OCI index: linux/amd64, linux/arm64/v8, linux/s390x
	MultiDocker *Index // test/multi:docker, Docker manifest list, same platforms
	Zstd        *Image // test/compress:zstd, Small's files in zstd layers
	Plain       *Image // test/compress:none, uncompressed layers
	EStargz     *Image // test/compress:estargz, eStargz layers
	Large       *Image // test/large:latest, one big gzip layer; nil with WithoutLarge
	Deep        *Image // test/deep/nested/repo:v1
	Paging      *Image // test/paging:tag-00 … tag-24 (one image)

	// Images maps every "repo:tag" naming an image to it; Indexes every
	// "repo:tag" naming an index.
	Images  map[string]*Image
	Indexes map[string]*Index
}

// Repositories lists the repositories of the set, sorted.
func (f *Fixtures) Repositories() []string {
	seen := map[string]bool{}
	for ref := range f.Images {
		seen[refRepo(ref)] = true
	}
	for ref := range f.Indexes {
		seen[refRepo(ref)] = true
	}
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Tags lists the tags of repo in the set, sorted as the registry sorts them.
func (f *Fixtures) Tags(repo string) []string {
	var out []string
	for ref := range f.Images {
		if refRepo(ref) == repo {
			out = append(out, ref[len(repo)+1:])
		}
	}
	for ref := range f.Indexes {
		if refRepo(ref) == repo {
			out = append(out, ref[len(repo)+1:])
		}
	}
	sort.Strings(out)
	return out
}

func refRepo(ref string) string { return ref[:strings.LastIndex(ref, ":")] }

// SmallLayerEntries returns the entries of test/small's three layers (base
// first). They exercise: nested dirs, relative/absolute/dangling symlinks,
// hardlinks, a whiteout of a lower file and of a lower dot-file, an opaque
// dir, a file replaced by a dir and a dir replaced by a file, xattrs,
// setuid/setgid/sticky modes, uid/gid with names, a fifo, char and block
// devices, long paths (USTAR prefix split and a >100-byte base name needing
// PAX), a non-default mtime, and files larger than EStargzChunkSize.
func SmallLayerEntries() [][]Entry {
	longDir := "opt/" + strings.Repeat("long-directory-name/", 5)              // ~104 bytes: USTAR prefix
	longName := "opt/" + strings.Repeat("very-long-file-name-", 6) + "end.txt" // base > 100 bytes: PAX
	base := []Entry{
		Dir("bin"), Dir("dev"), Dir("etc"), Dir("home"), Dir("opt"), Dir("run"),
		Dir("tmp").WithMode(0o1777),
		Dir("usr"), Dir("usr/bin"), Dir("usr/lib"), Dir("usr/share"), Dir("usr/share/doc"),
		Dir("var"), Dir("var/cache"), Dir("var/lib"),
		File("etc/hostname", "regfs\n"),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
		File("etc/old.conf", "this file is deleted by layer 2\n"),
		File("etc/xattrs", "has extended attributes\n").WithXattr("user.regfs", "hello").WithXattr("user.empty", ""),
		File("bin/tool", "#!/bin/sh\necho tool v1\n").WithMode(0o755),
		File("bin/sutool", "#!/bin/sh\necho setuid\n").WithMode(0o4755),
		File("bin/sgtool", "#!/bin/sh\necho setgid\n").WithMode(0o2755),
		Hardlink("bin/tool-hard", "bin/sutool"),
		File("usr/lib/libfoo.so.1", "\x7fELF not really\x00\x01\x02"),
		Symlink("usr/lib/libfoo.so", "libfoo.so.1"),
		Symlink("usr/bin/tool", "/bin/tool"),
		Symlink("usr/lib/dangling", "../missing/nowhere"),
		GeneratedFile("usr/share/doc/big.txt", 40000, 11, true),
		GeneratedFile("var/lib/data.bin", 70000, 12, false),
		File("var/cache/a", "cache a\n"),
		File("var/cache/b", "cache b\n"),
		Dir("var/cache/sub"),
		File("var/cache/sub/c", "cache sub c\n"),
		File("usr/replaced", "a file that layer 2 replaces by a directory\n"),
		Dir("opt/dir-to-file"),
		File("opt/dir-to-file/child", "child of a dir that layer 3 replaces by a file\n"),
		Dir("home/user").WithOwner(1000, 1000, "user", "user").WithMode(0o750),
		File("home/user/.profile", "export PS1='$ '\n").WithOwner(1000, 1000, "user", "user").WithMode(0o600),
		File("home/user/notes", "dear diary\n").WithOwner(1000, 1000, "user", "user").
			WithModTime(time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)),
		Fifo("run/fifo"),
		CharDevice("dev/null", 1, 3).WithMode(0o666),
		BlockDevice("dev/loop0", 7, 0),
		Dir(strings.TrimSuffix(longDir, "/")),
		File(longDir+"file.txt", "deep in a long path\n"),
		File(longName, "a base name longer than 100 bytes\n"),
		File("empty", ""),
	}
	layer2 := []Entry{
		Whiteout("etc/old.conf"),
		Opaque("var/cache"),
		File("var/cache/new", "only this survives in var/cache\n"),
		Dir("usr/replaced"),
		File("usr/replaced/inside", "inside the dir that replaced a file\n"),
		File("etc/hostname", "regfs-layer2\n"),
		Dir("app"),
		File("app/main.sh", "#!/bin/sh\necho main\n").WithMode(0o755),
	}
	layer3 := []Entry{
		Whiteout("home/user/.profile"),
		File("opt/dir-to-file", "now a file\n"),
		File("bin/tool", "#!/bin/sh\necho tool v3\n").WithMode(0o700),
		File("app/config.json", `{"debug": false}`+"\n"),
		Hardlink("app/main-link.sh", "app/main.sh"),
	}
	return [][]Entry{base, layer2, layer3}
}

// smallHistory is test/small's config history: three layers and two
// empty_layer steps.
func smallHistory(layers []*Layer) []ocispec.History {
	at := func(min int) *time.Time {
		t := DefaultCreated.Add(time.Duration(min) * time.Minute)
		return &t
	}
	return []ocispec.History{
		{Created: at(0), CreatedBy: layers[0].CreatedBy, Comment: "base"},
		{Created: at(1), CreatedBy: "/bin/sh -c #(nop)  ENV FOO=bar", EmptyLayer: true},
		{Created: at(2), CreatedBy: layers[1].CreatedBy},
		{Created: at(3), CreatedBy: "/bin/sh -c #(nop)  LABEL org.regfs.test=small", EmptyLayer: true},
		{Created: at(4), CreatedBy: layers[2].CreatedBy, Author: "regfs tests"},
	}
}

func smallConfig() ocispec.ImageConfig {
	return ocispec.ImageConfig{
		User:       "1000:1000",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar"},
		Entrypoint: []string{"/app/main.sh"},
		Cmd:        []string{"--help"},
		WorkingDir: "/app",
		Labels:     map[string]string{"org.regfs.test": "small"},
	}
}

// buildSmallLike builds test/small's layers with compression c into an image.
func buildSmallLike(c Compression, f ManifestFormat) (*Image, error) {
	sets := SmallLayerEntries()
	layers := make([]*Layer, len(sets))
	for i, entries := range sets {
		l, err := BuildLayer(LayerSpec{Entries: entries, Compression: c,
			CreatedBy: fmt.Sprintf("/bin/sh -c #(nop) ADD small layer %d (%s)", i+1, c)})
		if err != nil {
			return nil, fmt.Errorf("small layer %d: %w", i+1, err)
		}
		layers[i] = l
	}
	return BuildImage(ImageSpec{
		Format: f, Created: DefaultCreated.Add(5 * time.Minute), Author: "regfs tests",
		Layers: layers, History: smallHistory(layers), Config: smallConfig(),
		Annotations: map[string]string{"org.opencontainers.image.title": "regfs small " + string(c)},
	})
}

// builtFixtures are the fixture images, built once per process and config.
type builtFixtures struct {
	small, smallDocker, zstd, plain, estargz, deep, paging *Image
	large                                                  *Image
	multi, multiDocker                                     *Index
}

var (
	fixtureMu    sync.Mutex
	fixtureBuilt = map[FixtureConfig]*builtFixtures{}
)

func buildFixtures(cfg FixtureConfig) (*builtFixtures, error) {
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if b, ok := fixtureBuilt[cfg]; ok {
		return b, nil
	}
	b := &builtFixtures{}
	var err error
	steps := []struct {
		name string
		dst  **Image
		c    Compression
		f    ManifestFormat
	}{
		{"small", &b.small, Gzip, FormatOCI},
		{"small docker", &b.smallDocker, Gzip, FormatDocker},
		{"zstd", &b.zstd, Zstd, FormatOCI},
		{"none", &b.plain, Uncompressed, FormatOCI},
		{"estargz", &b.estargz, EStargz, FormatOCI},
	}
	for _, s := range steps {
		if *s.dst, err = buildSmallLike(s.c, s.f); err != nil {
			return nil, fmt.Errorf("fixture %s: %w", s.name, err)
		}
	}
	if b.deep, err = singleLayerImage(FormatOCI, ocispec.Platform{}, "deep",
		File("deep.txt", "in a deep repository path\n"), Dir("a"), Dir("a/b"), File("a/b/c.txt", "c\n")); err != nil {
		return nil, fmt.Errorf("fixture deep: %w", err)
	}
	if b.paging, err = singleLayerImage(FormatOCI, ocispec.Platform{}, "paging", File("paging.txt", "one image, many tags\n")); err != nil {
		return nil, fmt.Errorf("fixture paging: %w", err)
	}
	for _, f := range []ManifestFormat{FormatOCI, FormatDocker} {
		var imgs []*Image
		for _, p := range MultiPlatforms() {
			img, err := singleLayerImage(f, p, "multi",
				File("platform.txt", platformString(p)+"\n"),
				GeneratedFile("payload.bin", 3000, uint64(len(imgs)+21), false))
			if err != nil {
				return nil, fmt.Errorf("fixture multi %s: %w", platformString(p), err)
			}
			imgs = append(imgs, img)
		}
		idx, err := BuildIndex(f, map[string]string{"org.regfs.test": "multi"}, imgs...)
		if err != nil {
			return nil, fmt.Errorf("fixture multi: %w", err)
		}
		if f == FormatOCI {
			b.multi = idx
		} else {
			b.multiDocker = idx
		}
	}
	if !cfg.SkipLarge {
		l, err := BuildLargeLayer(cfg.LargeSeed, cfg.LargeSize)
		if err != nil {
			return nil, fmt.Errorf("fixture large: %w", err)
		}
		if b.large, err = BuildImage(ImageSpec{Layers: []*Layer{l}}); err != nil {
			return nil, fmt.Errorf("fixture large: %w", err)
		}
	}
	fixtureBuilt[cfg] = b
	return b, nil
}

// MultiPlatforms are the platforms of test/multi, in index order.
func MultiPlatforms() []ocispec.Platform {
	return []ocispec.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	}
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func singleLayerImage(f ManifestFormat, p ocispec.Platform, what string, entries ...Entry) (*Image, error) {
	l, err := BuildLayer(LayerSpec{Entries: entries, CreatedBy: "/bin/sh -c #(nop) ADD " + what})
	if err != nil {
		return nil, err
	}
	return BuildImage(ImageSpec{Format: f, Platform: p, Layers: []*Layer{l},
		Config: ocispec.ImageConfig{Labels: map[string]string{"org.regfs.test": what}}})
}

// PushFixtures pushes the standard fixture set to reg, fails the test on
// error, and then resets reg's counters so the test counts only its own
// requests.
func PushFixtures(t testing.TB, reg *Registry, opts ...FixtureOption) *Fixtures {
	t.Helper()
	f, err := PushFixturesTo(context.Background(), NewPusher(reg), reg.Host, opts...)
	if err != nil {
		t.Fatalf("push fixtures: %v", err)
	}
	reg.ResetStats()
	if reg.Token != nil {
		reg.Token.ResetRequests()
	}
	return f
}

// PushFixturesTo builds (once per process) and pushes the standard fixture
// set with p to the registry at host.
func PushFixturesTo(ctx context.Context, p *Pusher, host string, opts ...FixtureOption) (*Fixtures, error) {
	cfg := FixtureConfig{LargeSize: DefaultLargeSize, LargeSeed: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.SkipLarge {
		cfg.LargeSize, cfg.LargeSeed = 0, 0
	}
	b, err := buildFixtures(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fixtures{
		Host: host, Small: b.small, SmallDocker: b.smallDocker, Multi: b.multi, MultiDocker: b.multiDocker,
		Zstd: b.zstd, Plain: b.plain, EStargz: b.estargz, Large: b.large, Deep: b.deep, Paging: b.paging,
		Images:  map[string]*Image{},
		Indexes: map[string]*Index{},
	}
	images := []struct {
		repo, tag string
		img       *Image
	}{
		{RepoSmall, "latest", f.Small},
		{RepoSmall, "docker", f.SmallDocker},
		{RepoCompress, "zstd", f.Zstd},
		{RepoCompress, "none", f.Plain},
		{RepoCompress, "estargz", f.EStargz},
		{RepoDeep, "v1", f.Deep},
	}
	if f.Large != nil {
		images = append(images, struct {
			repo, tag string
			img       *Image
		}{RepoLarge, "latest", f.Large})
	}
	// Pushes overlap: the registry's filesystem storage fsyncs every
	// write, so latency, not CPU, bounds a serial push.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, im := range images {
		f.Images[im.repo+":"+im.tag] = im.img
		g.Go(func() error {
			if err := p.PushImage(gctx, im.repo, im.img, im.tag); err != nil {
				return fmt.Errorf("push %s:%s: %w", im.repo, im.tag, err)
			}
			return nil
		})
	}
	for tag, idx := range map[string]*Index{"latest": f.Multi, "docker": f.MultiDocker} {
		f.Indexes[RepoMulti+":"+tag] = idx
		g.Go(func() error {
			if err := p.PushIndex(gctx, RepoMulti, idx, tag); err != nil {
				return fmt.Errorf("push %s:%s: %w", RepoMulti, tag, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := p.PushImage(gctx, RepoPaging, f.Paging); err != nil {
			return fmt.Errorf("push %s: %w", RepoPaging, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// Tags last: the paging image's blobs are in place by now.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := 0; i < PagingTagCount; i++ {
		tag := fmt.Sprintf("tag-%02d", i)
		f.Images[RepoPaging+":"+tag] = f.Paging
		g.Go(func() error {
			if err := p.PushManifest(gctx, RepoPaging, tag, f.Paging.MediaType, f.Paging.Manifest); err != nil {
				return fmt.Errorf("push %s:%s: %w", RepoPaging, tag, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return f, nil
}
