package mounttest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/registry/registrytest"
)

// needTool skips the test when a client it drives is not installed
// (scripts/setup.sh installs them).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (scripts/setup.sh installs it)", name)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// blobGets counts blob GETs the shared registry answered.
func blobGets() int {
	return reg.CountRequests(func(q registrytest.Request) bool {
		return q.Method == "GET" && strings.Contains(q.Path, "/blobs/")
	})
}

// TestViewsCostNothingUntilRead: listing an image directory, its oci/
// layout and its blobs, and stating image.tar and every blob, fetches no
// blob; the sizes are exact.
func TestViewsCostNothingUntilRead(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	for _, c := range []struct {
		dir string
		img *registrytest.Image
	}{
		{"test/small/_tags/latest", fixtures.Small},
		{"test/small/_tags/docker", fixtures.SmallDocker},
	} {
		dir := filepath.Join(mnt, c.dir)
		readdir(t, dir) // resolves the tag: manifest and config
		before := blobGets()
		got := lsLong(t, dir)
		for _, want := range []string{"oci", "image.tar"} {
			if !slices.Contains(got, want) {
				t.Errorf("ls %s: got %v, want %s among them", c.dir, got, want)
			}
		}
		if got, want := lsLong(t, filepath.Join(dir, "oci")), []string{"blobs", "index.json", "oci-layout"}; !slices.Equal(got, want) {
			t.Errorf("ls %s/oci: got %v, want %v", c.dir, got, want)
		}
		want := []string{c.img.Digest.Encoded(), c.img.ConfigDigest.Encoded()}
		sizes := map[string]int64{c.img.Digest.Encoded(): int64(len(c.img.Manifest)), c.img.ConfigDigest.Encoded(): int64(len(c.img.Config))}
		for _, l := range c.img.Layers {
			want = append(want, l.Digest.Encoded())
			b, err := l.BlobBytes()
			if err != nil {
				t.Fatal(err)
			}
			sizes[l.Digest.Encoded()] = int64(len(b))
		}
		slices.Sort(want)
		want = slices.Compact(want)
		blobs := filepath.Join(dir, "oci/blobs/sha256")
		if got := lsLong(t, blobs); !slices.Equal(got, want) {
			t.Errorf("ls %s: got %v, want %v", blobs, got, want)
		}
		for name, size := range sizes {
			if st, err := os.Stat(filepath.Join(blobs, name)); err != nil || st.Size() != size {
				t.Errorf("stat blob %s: got %v %v, want size %d", name, st, err, size)
			}
		}
		if st, err := os.Stat(filepath.Join(dir, "image.tar")); err != nil || st.Size() < 2048 {
			t.Errorf("stat image.tar: got %v %v", st, err)
		}
		if n := blobGets() - before; n != 0 {
			t.Errorf("listing %s and its views: got %d blob GETs, want none", c.dir, n)
		}
		// The count sees a blob read (this mount has read none before;
		// both images share their layer).
		if c.img != fixtures.Small {
			continue
		}
		if got := sha256File(t, filepath.Join(blobs, c.img.Layers[0].Digest.Encoded())); got != c.img.Layers[0].Digest || blobGets() == before {
			t.Errorf("read layer blob %s: got sha256 %s, %d blob GETs", c.img.Layers[0].Digest, got, blobGets()-before)
		}
	}
	// An index lays out every platform.
	dir := filepath.Join(mnt, "test/multi/_tags/latest/oci")
	var idx ocispec.Index
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "index.json")), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != fixtures.Multi.Digest || idx.Manifests[0].Annotations[ocispec.AnnotationRefName] != "latest" {
		t.Errorf("multi oci/index.json: got %+v, want the index %s named latest", idx.Manifests, fixtures.Multi.Digest)
	}
	got := readdir(t, filepath.Join(dir, "blobs/sha256"))
	for _, im := range fixtures.Multi.Images {
		for _, d := range []digest.Digest{im.Digest, im.ConfigDigest, im.Layers[0].Digest} {
			if !slices.Contains(got, d.Encoded()) {
				t.Errorf("multi oci/blobs/sha256: got %v, want %s (%s) among them", got, d, im.Platform.Architecture)
			}
		}
	}
	if got := sha256File(t, filepath.Join(dir, "blobs/sha256", fixtures.Multi.Digest.Encoded())); got != fixtures.Multi.Digest {
		t.Errorf("multi index blob: got sha256 %s, want %s", got, fixtures.Multi.Digest)
	}
}

// TestOCIViewWithSkopeoAndUmoci: real clients read oci/ as the image.
func TestOCIViewWithSkopeoAndUmoci(t *testing.T) {
	skopeo := needTool(t, "skopeo")
	mnt := mount(t, reg.Host, mountOpts{})
	layout := filepath.Join(mnt, "test/small/_tags/latest/oci")

	var inspected struct{ Digest digest.Digest }
	if err := json.Unmarshal(runTool(t, skopeo, "inspect", "oci:"+layout), &inspected); err != nil {
		t.Fatal(err)
	}
	if inspected.Digest != fixtures.Small.Digest {
		t.Errorf("skopeo inspect oci:%s: got digest %s, want %s", layout, inspected.Digest, fixtures.Small.Digest)
	}

	out := filepath.Join(t.TempDir(), "out")
	runTool(t, skopeo, "copy", "oci:"+layout, "oci:"+out+":latest")
	checkCopiedLayout(t, out, fixtures.Small.Digest)
	for _, l := range fixtures.Small.Layers {
		if got := sha256File(t, filepath.Join(out, "blobs/sha256", l.Digest.Encoded())); got != l.Digest {
			t.Errorf("skopeo copy: layer %s: got sha256 %s", l.Digest, got)
		}
	}

	// Every platform of an index: the copy is the registry's index.
	outAll := filepath.Join(t.TempDir(), "all")
	runTool(t, skopeo, "copy", "--all", "oci:"+filepath.Join(mnt, "test/multi/_tags/latest/oci"), "oci:"+outAll+":latest")
	checkCopiedLayout(t, outAll, fixtures.Multi.Digest)

	// umoci unpacks one manifest: an index's platform, named by the tag
	// that reached the index, under platforms/.
	umoci := needTool(t, "umoci")
	for _, dir := range []string{"test/small/_tags/latest", "test/multi/_tags/latest/platforms/linux-amd64"} {
		bundle := filepath.Join(t.TempDir(), "bundle")
		runTool(t, umoci, "unpack", "--rootless", "--image", filepath.Join(mnt, dir, "oci")+":latest", bundle)
		sameTree(t, filepath.Join(mnt, dir, "rootfs"), filepath.Join(bundle, "rootfs"))
	}
}

// sameTree: theirs has the files, links and directories of ours, with the
// same contents.
func sameTree(t *testing.T, ours, theirs string) {
	t.Helper()
	want, got := describe(t, ours), describe(t, theirs)
	if len(want) == 0 || len(got) != len(want) {
		t.Errorf("%s: got %d entries, want the %d of %s", theirs, len(got), len(want), ours)
	}
	for name, e := range want {
		u, ok := got[name]
		if ok && (e.typ == tar.TypeChar || e.typ == tar.TypeBlock) && u.typ == tar.TypeReg && u.size == 0 {
			continue // rootless umoci cannot mknod: it leaves an empty file
		}
		if !ok || u.typ != e.typ || u.size != e.size || u.sum != e.sum || u.link != e.link {
			t.Errorf("%s/%s: got %+v, want %+v", theirs, name, u, e)
		}
	}
}

// checkCopiedLayout: the layout at dir names top as latest, and holds it.
func checkCopiedLayout(t *testing.T, dir string, top digest.Digest) {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "index.json")), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != top {
		t.Fatalf("copy %s: got index.json %+v, want %s", dir, idx.Manifests, top)
	}
	if got := sha256File(t, filepath.Join(dir, "blobs/sha256", top.Encoded())); got != top {
		t.Errorf("copy %s: top blob has sha256 %s", dir, got)
	}
}

// TestImageTarView: image.tar is a docker-save archive of the stored
// blobs that tar lists, skopeo loads, and any ranged read agrees with.
func TestImageTarView(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	img := fixtures.Small
	path := filepath.Join(mnt, "test/small/_tags/latest/image.tar")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	whole := readFile(t, path)
	if int64(len(whole)) != st.Size() {
		t.Fatalf("image.tar: read %d bytes, stat said %d", len(whole), st.Size())
	}

	// Every member is what its name says; manifest.json names them.
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(whole))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("image.tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("image.tar %s: %v", h.Name, err)
		}
		members[h.Name] = b
		if hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && hex != "" {
			if got := sha256.Sum256(b); digest.NewDigestFromBytes(digest.SHA256, got[:]).Encoded() != hex {
				t.Errorf("image.tar %s: content has another digest", h.Name)
			}
		}
	}
	var saved []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(members["manifest.json"], &saved); err != nil || len(saved) != 1 {
		t.Fatalf("image.tar manifest.json: %v %s", err, members["manifest.json"])
	}
	if want := reg.Host + "/test/small:latest"; !slices.Equal(saved[0].RepoTags, []string{want}) {
		t.Errorf("manifest.json RepoTags: got %v, want [%s]", saved[0].RepoTags, want)
	}
	if !bytes.Equal(members[saved[0].Config], img.Config) {
		t.Errorf("manifest.json Config %s: not the image's config", saved[0].Config)
	}
	if len(saved[0].Layers) != len(img.Layers) {
		t.Fatalf("manifest.json Layers: got %v, want %d", saved[0].Layers, len(img.Layers))
	}
	for i, l := range img.Layers {
		want, err := l.BlobBytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(members[saved[0].Layers[i]], want) {
			t.Errorf("layer %d (%s): not the stored blob", i, saved[0].Layers[i])
		}
	}

	// Ranged reads, each at a fresh offset, agree with the whole.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 50; i++ {
		off := rng.Int63n(int64(len(whole)))
		p := make([]byte, 1+rng.Intn(70000))
		n, err := f.ReadAt(p, off)
		if err != nil && err != io.EOF || !bytes.Equal(p[:n], whole[off:min(off+int64(len(p)), int64(len(whole)))]) {
			t.Fatalf("read %d at %d: %d bytes, %v, or not the archive's", len(p), off, n, err)
		}
	}

	out := runTool(t, needTool(t, "tar"), "-tvf", path)
	for _, want := range []string{"manifest.json", "repositories", saved[0].Config, saved[0].Layers[0]} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("tar -tvf: got\n%s\nwant %s listed", out, want)
		}
	}

	// skopeo takes the compressed layer members: its copy has the image's
	// config, and layers whose content is the layers' (diff IDs).
	skopeo := needTool(t, "skopeo")
	dst := filepath.Join(t.TempDir(), "x")
	runTool(t, skopeo, "copy", "docker-archive:"+path, "oci:"+dst+":latest")
	var idx ocispec.Index
	if err := json.Unmarshal(readFile(t, filepath.Join(dst, "index.json")), &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("copy of image.tar: index.json %+v %v", idx, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(readFile(t, filepath.Join(dst, "blobs/sha256", idx.Manifests[0].Digest.Encoded())), &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != img.ConfigDigest || len(m.Layers) != len(img.Layers) {
		t.Errorf("copy of image.tar: config %s and %d layers, want %s and %d", m.Config.Digest, len(m.Layers), img.ConfigDigest, len(img.Layers))
	}

	// podman, where installed (not by setup.sh: a heavy package). Its vfs
	// driver in a storage of the test's own: the default overlay driver
	// cannot apply layers inside this kind of container at all.
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Log("podman not installed: podman load not tried")
		return
	}
	storage := t.TempDir()
	pod := []string{"--storage-driver", "vfs", "--root", filepath.Join(storage, "root"), "--runroot", filepath.Join(storage, "run")}
	name := reg.Host + "/test/small:latest"
	if out := runTool(t, podman, append(pod, "load", "-i", path)...); !bytes.Contains(out, []byte("Loaded image: "+name)) {
		t.Errorf("podman load: got\n%s\nwant %s loaded", out, name)
	}
	if id := strings.TrimSpace(string(runTool(t, podman, append(pod, "image", "inspect", "--format", "{{.Id}}", name)...))); id != img.ConfigDigest.Encoded() {
		t.Errorf("podman image inspect %s: got ID %s, want the config digest %s", name, id, img.ConfigDigest.Encoded())
	}
}

// TestImageTarSeeks: a read near the end of image.tar fetches the blob
// bytes under it, not the part of the layer that precedes them.
func TestImageTarSeeks(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	l := fixtures.Large.Layers[0]
	blob, err := l.BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mnt, "test/large/_tags/latest/image.tar")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The layer's last 4 KiB: the archive ends with its padding and the
	// two zero blocks of the trailer.
	end := st.Size() - 1024 - (512-int64(len(blob))%512)%512
	p := make([]byte, 4096)
	before := blobBytes(reg)
	if _, err := f.ReadAt(p, end-int64(len(p))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, blob[len(blob)-len(p):]) {
		t.Errorf("image.tar: the 4 KiB before %d are not the layer's last", end)
	}
	if got := blobBytes(reg) - before; got <= 0 || got > int64(len(blob))/4 {
		t.Errorf("read 4 KiB at the end of a %d-byte layer: fetched %d blob bytes, want some and under a quarter", len(blob), got)
	} else {
		t.Logf("read 4 KiB at the end of a %d-byte layer in image.tar: fetched %d blob bytes", len(blob), got)
	}
}
