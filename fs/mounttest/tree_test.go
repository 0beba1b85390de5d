package mounttest

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

func readdir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

func TestListing(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	if got := readdir(t, mnt); !slices.Contains(got, "test") {
		t.Errorf("ls /: got %v, want test among them", got)
	}
	// A directory of repositories lists their names (the catalog); a
	// repository's _tags/ lists its tags.
	got := readdir(t, filepath.Join(mnt, "test"))
	for _, want := range []string{"small", "multi", "compress", "large", "deep"} {
		if !slices.Contains(got, want) {
			t.Errorf("ls /test: got %v, want %s among them", got, want)
		}
	}
	if !sort.StringsAreSorted(got) {
		t.Errorf("ls /test: got %v, want sorted", got)
	}
	for repo, tags := range map[string][]string{
		"small": {"latest", "docker"}, "multi": {"latest", "docker"}, "compress": {"zstd", "none", "estargz"},
		"large": {"latest"}, "deep/nested/repo": {"v1"},
	} {
		got := readdir(t, filepath.Join(mnt, "test", repo, "_tags"))
		for _, want := range tags {
			if !slices.Contains(got, want) {
				t.Errorf("ls /test/%s/_tags: got %v, want %s among them", repo, got, want)
			}
		}
	}
	if got := readdir(t, filepath.Join(mnt, "test/deep/nested/repo")); !slices.Equal(got, []string{"_digests", "_tags"}) {
		t.Errorf("ls /test/deep/nested/repo: got %v, want [_digests _tags]", got)
	}
	got = readdir(t, filepath.Join(mnt, "test/small:latest"))
	if want := []string{"ancestry", "config.json", "image.tar", "json", "layers", "manifest.json", "oci", "rootfs"}; !slices.Equal(got, want) {
		t.Errorf("ls test/small:latest: got %v, want %v", got, want)
	}
	for _, p := range []string{"test", "test/small:latest", "test/small:latest/layers", "test/small/_tags/latest", "test/small/_tags"} {
		st, err := os.Stat(filepath.Join(mnt, p))
		if err != nil || st.Mode().Perm() != 0o555 || !st.IsDir() {
			t.Errorf("stat %s: got %v %v, want a 0555 directory", p, st.Mode(), err)
		}
	}
}

// checkImage checks an image directory against the image pushed.
func checkImage(t *testing.T, dir string, img *registrytest.Image) {
	t.Helper()
	if got := sha256File(t, filepath.Join(dir, "manifest.json")); got != img.Digest {
		t.Errorf("%s/manifest.json: got sha256 %s, want %s", dir, got, img.Digest)
	}
	if got := readFile(t, filepath.Join(dir, "config.json")); !bytes.Equal(got, img.Config) {
		t.Errorf("%s/config.json: got %d bytes, want the %d pushed", dir, len(got), len(img.Config))
	}
	st, err := os.Stat(filepath.Join(dir, "config.json"))
	if err != nil || st.Size() != int64(len(img.Config)) || st.Mode().Perm() != 0o444 {
		t.Errorf("stat config.json: got %v %v, want size %d mode 0444", st, err, len(img.Config))
	}
	ids := chainIDs(img.DiffIDs)
	var anc []string
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "ancestry")), &anc); err != nil {
		t.Fatalf("ancestry: %v", err)
	}
	top := slices.Clone(ids)
	slices.Reverse(top)
	if !slices.Equal(anc, top) {
		t.Errorf("ancestry: got %v, want %v (top first)", anc, top)
	}
	sorted := slices.Clone(ids)
	sort.Strings(sorted)
	if got := readdir(t, filepath.Join(dir, "layers")); !slices.Equal(got, sorted) {
		t.Errorf("ls layers: got %v, want %v", got, sorted)
	}
	for i, l := range img.Layers {
		ld := filepath.Join(dir, "layers", ids[i])
		if got := string(readFile(t, filepath.Join(ld, "digest"))); got != l.Digest.String()+"\n" {
			t.Errorf("%s/digest: got %q, want %q", ld, got, l.Digest)
		}
		checkBlob(t, filepath.Join(ld, "blob"), l)
		want, err := l.TarBytes()
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(ld, "layer.tar")); !bytes.Equal(got, want) {
			t.Errorf("%s/layer.tar: got %d bytes, want the %d-byte uncompressed tar", ld, len(got), len(want))
		}
		if st, err := os.Stat(filepath.Join(ld, "layer.tar")); err != nil || st.Size() != int64(len(want)) {
			t.Errorf("stat layer.tar after reading: got %v %v, want size %d", st, err, len(want))
		}
	}
}

// checkBlob reads a blob file sequentially and at random offsets.
func checkBlob(t *testing.T, path string, l *registrytest.Layer) {
	t.Helper()
	if got := sha256File(t, path); got != l.Digest {
		t.Errorf("%s: got sha256 %s, want %s", path, got, l.Digest)
	}
	want, err := l.BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("stat %s: got %v %v, want size %d", path, st, err, len(want))
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(int64(len(want))))
	for i := 0; i < 40; i++ {
		off := rng.Int63n(int64(len(want)))
		buf := make([]byte, 1+rng.Intn(300_000))
		n, err := f.ReadAt(buf, off)
		end := min(off+int64(len(buf)), int64(len(want)))
		if int64(n) != end-off || !bytes.Equal(buf[:n], want[off:end]) {
			t.Fatalf("%s at %d+%d: got %d bytes (%v), want %d matching", path, off, len(buf), n, err, end-off)
		}
	}
}

func TestImages(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	for _, tc := range []struct {
		name string
		img  *registrytest.Image
	}{
		{"test/small:latest", fixtures.Small},
		{"test/small:docker", fixtures.SmallDocker},
		{"test/small@" + fixtures.Small.Digest.String(), fixtures.Small},
		{"test/compress:zstd", fixtures.Zstd},
		{"test/compress:none", fixtures.Plain},
		{"test/compress:estargz", fixtures.EStargz},
		{"test/deep/nested/repo:v1", fixtures.Deep},
		{"test/large:latest", fixtures.Large},
	} {
		t.Run(strings.NewReplacer("/", "_", "@", "_").Replace(tc.name), func(t *testing.T) {
			checkImage(t, filepath.Join(mnt, tc.name), tc.img)
		})
	}
}

func TestMultiPlatform(t *testing.T) {
	for _, img := range fixtures.Multi.Images {
		p := registry.Platform{OS: img.Platform.OS, Architecture: img.Platform.Architecture, Variant: img.Platform.Variant}
		t.Run(p.DirName(), func(t *testing.T) {
			mnt := mount(t, reg.Host, mountOpts{platform: p})
			dir := filepath.Join(mnt, "test/multi:latest")
			if got := sha256File(t, filepath.Join(dir, "index.json")); got != fixtures.Multi.Digest {
				t.Errorf("index.json: got sha256 %s, want %s", got, fixtures.Multi.Digest)
			}
			checkImage(t, dir, img)
			var want []string
			for _, i := range fixtures.Multi.Images {
				want = append(want, registry.Platform{OS: i.Platform.OS, Architecture: i.Platform.Architecture, Variant: i.Platform.Variant}.DirName())
			}
			sort.Strings(want)
			if got := readdir(t, filepath.Join(dir, "platforms")); !slices.Equal(got, want) {
				t.Errorf("ls platforms: got %v, want %v", got, want)
			}
			for _, i := range fixtures.Multi.Images {
				pd := filepath.Join(dir, "platforms", registry.Platform{OS: i.Platform.OS, Architecture: i.Platform.Architecture, Variant: i.Platform.Variant}.DirName())
				if got := sha256File(t, filepath.Join(pd, "manifest.json")); got != i.Digest {
					t.Errorf("%s/manifest.json: got %s, want %s", pd, got, i.Digest)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	zero := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		path string
		want syscall.Errno
	}{
		{"nosuch", syscall.ENOENT},
		{"test/nosuch", syscall.ENOENT},
		{"test/nosuch:latest", syscall.ENOENT},
		{"test/small:nosuch", syscall.ENOENT},
		{"test/small@" + zero, syscall.ENOENT},
		{"test/small:latest/nosuch", syscall.ENOENT},
		{"test/small:latest/layers/nosuch", syscall.ENOENT},
	} {
		_, err := os.Stat(filepath.Join(mnt, tc.path))
		if got := errnoOf(err); got != tc.want {
			t.Errorf("stat %s: got %v (%v), want %v", tc.path, got, err, tc.want)
		}
	}
	img := filepath.Join(mnt, "test/small:latest")
	writes := []struct {
		what string
		do   func() error
	}{
		{"open manifest.json for writing", func() error {
			f, err := os.OpenFile(filepath.Join(img, "manifest.json"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"create a file", func() error { return os.WriteFile(filepath.Join(img, "new"), []byte("x"), 0o644) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(img, "d"), 0o755) }},
		{"remove", func() error { return os.Remove(filepath.Join(img, "manifest.json")) }},
		{"rename", func() error { return os.Rename(filepath.Join(img, "json"), filepath.Join(img, "j")) }},
		{"chmod", func() error { return os.Chmod(filepath.Join(img, "json"), 0o777) }},
		{"truncate", func() error { return os.Truncate(filepath.Join(img, "json"), 0) }},
	}
	for _, w := range writes {
		if got := errnoOf(w.do()); got != syscall.EROFS {
			t.Errorf("%s: got %v, want EROFS", w.what, got)
		}
	}
}
