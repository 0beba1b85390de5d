package mounttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// A fleet: fleetMounts regfs mounts, each with its own cache dir, read the
// same image through one pull-through cache (distribution in proxy mode)
// in front of the origin. docs/design/fleet.md has the cache's rules.

const (
	fleetMounts = 4
	fleetRepo   = "fleet/app"
	fleetRef    = fleetRepo + ":v1"
)

// fleetImage is two gzip layers: small files, and a 1 MiB file whose blob
// spans many blocks.
func fleetImage(t *testing.T) *registrytest.Image {
	t.Helper()
	var layers []*registrytest.Layer
	for _, entries := range [][]registrytest.Entry{
		{registrytest.Dir("etc"), registrytest.File("etc/motd", "one origin, many machines\n"),
			registrytest.GeneratedFile("etc/table", 40<<10, 11, true)},
		{registrytest.Dir("opt"), registrytest.GeneratedFile("opt/data.bin", 1<<20, 12, false)},
	} {
		l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// fleetRead reads, through one mount, rootfs files, a range of each layer
// blob and each layer.tar, and compares them with what was pushed.
func fleetRead(mnt string, img *registrytest.Image) error {
	root := filepath.Join(mnt, fleetRef)
	files := img.RootFS()
	for _, name := range []string{"etc/motd", "etc/table", "opt/data.bin"} {
		got, err := os.ReadFile(filepath.Join(root, "rootfs", name))
		if err != nil {
			return err
		}
		if want := files[name].Data(); !bytes.Equal(got, want) {
			return fmt.Errorf("rootfs/%s: got %d bytes, not the %d pushed", name, len(got), len(want))
		}
	}
	for i, id := range chainIDs(img.DiffIDs) {
		l := img.Layers[i]
		blob, err := l.BlobBytes()
		if err != nil {
			return err
		}
		off := l.Size / 2
		want := blob[off:min(off+8<<10, l.Size)]
		got := make([]byte, len(want))
		if err := readAtFile(filepath.Join(root, "layers", id, "blob"), got, off); err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("layer %d blob [%d,%d): bytes differ from the origin's", i, off, off+int64(len(want)))
		}
		tarPath := filepath.Join(root, "layers", id, "layer.tar")
		if d, err := sha256Of(tarPath); err != nil {
			return err
		} else if d != l.DiffID {
			return fmt.Errorf("%s: got %s, want the diff_id %s", tarPath, d, l.DiffID)
		}
	}
	return nil
}

func readAtFile(path string, p []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(p, off); err != nil {
		return fmt.Errorf("%s: read at %d: %w", path, off, err)
	}
	return nil
}

func sha256Of(path string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// originBlobGETs sums the origin's blob GETs per digest: requests, and
// body bytes sent.
func originBlobGETs(origin *registrytest.Registry) (n map[digest.Digest]int, sent map[digest.Digest]int64) {
	n, sent = map[digest.Digest]int{}, map[digest.Digest]int64{}
	for _, q := range origin.Requests() {
		if !isBlobGET(q) {
			continue
		}
		d := digest.Digest(q.Path[strings.LastIndex(q.Path, "/")+1:])
		n[d]++
		sent[d] += q.Bytes
	}
	return n, sent
}

// waitAnswered waits until every request r logged has been answered: the
// pull-through cache stores a blob only after its handler is done.
func waitAnswered(t *testing.T, r *registrytest.Registry) {
	t.Helper()
	waitFor(t, "the cache's requests to end", func() bool {
		for _, q := range r.Requests() {
			if !q.Done {
				return false
			}
		}
		return true
	})
}

// fleetSetup pushes img to a new origin and starts a pull-through cache of
// it; the origin's counters start at zero.
func fleetSetup(t *testing.T, img *registrytest.Image) (origin, cache *registrytest.Registry) {
	t.Helper()
	needFUSE(t)
	origin = registrytest.StartRegistry(t)
	if err := registrytest.NewPusher(origin).PushImage(context.Background(), fleetRepo, img, "v1"); err != nil {
		t.Fatal(err)
	}
	cache = registrytest.StartRegistry(t, registrytest.WithPullThrough(origin.URL))
	origin.ResetStats()
	return origin, cache
}

// readOnMounts mounts n regfs (each its own cache dir) on cache, runs read
// on all at once, and unmounts.
func readOnMounts(t *testing.T, cache *registrytest.Registry, n int, read func(mnt string) error) {
	t.Helper()
	mounts := make([]*regfsProc, n)
	for i := range mounts {
		mounts[i] = startCacheMount(t, cache.Host, t.TempDir())
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, p := range mounts {
		wg.Go(func() { errs[i] = read(p.mnt) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("mount %d of %d: %v", i+1, n, err)
		}
	}
	for _, p := range mounts {
		stopCacheMount(t, p)
	}
	waitAnswered(t, cache)
}

// cacheBlobGETs counts the cache's blob GETs per digest.
func cacheBlobGETs(cache *registrytest.Registry) map[digest.Digest]int {
	n, _ := originBlobGETs(cache)
	return n
}

// A cache warmed by one whole pull (skopeo, as a CI job or the first
// machine would) serves the whole fleet: every blob left the origin once.
func TestFleetWarmCacheOneCopyPerBlob(t *testing.T) {
	img := fleetImage(t)
	origin, cache := fleetSetup(t, img)
	out, err := exec.Command("skopeo", "copy", "--insecure-policy", "--src-tls-verify=false",
		"docker://"+cache.Host+"/"+fleetRef, "oci:"+t.TempDir()+":v1").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy through the cache (scripts/setup.sh installs skopeo): %v\n%s", err, out)
	}
	waitAnswered(t, cache)
	n, sent := originBlobGETs(origin)
	blobs := map[digest.Digest]int64{img.ConfigDigest: int64(len(img.Config))}
	for _, l := range img.Layers {
		blobs[l.Digest] = l.Size
	}
	for d, size := range blobs {
		if n[d] != 1 || sent[d] != size {
			t.Errorf("warm-up: blob %s: origin served %d GETs, %d bytes; want 1 and the blob's %d", d, n[d], sent[d], size)
		}
	}
	origin.ResetStats()

	readOnMounts(t, cache, fleetMounts, func(mnt string) error { return fleetRead(mnt, img) })
	if n, _ := originBlobGETs(origin); len(n) != 0 {
		t.Errorf("%d mounts: the origin served blob GETs %v, want none", fleetMounts, n)
	}
	st := origin.Stats()
	t.Logf("origin, %d mounts reading after the warm-up: %s (tag lookups and pings)", fleetMounts, st)
	if st.BlobBytesServed != 0 {
		t.Errorf("%d mounts: origin served %d blob bytes, want 0", fleetMounts, st.BlobBytesServed)
	}
}

// On a cold cache a miss ignores Range and streams the whole blob, which
// the cache keeps only if its client takes the last byte. regfs reads such
// an answer to its end, and asks one request at a time per blob until Range
// is honoured: one mount reading first, then the others, costs the origin
// one copy of each blob (docs/design/fleet.md).
func TestFleetColdCache(t *testing.T) {
	img := fleetImage(t)
	origin, cache := fleetSetup(t, img)
	read := func(mnt string) error { return fleetRead(mnt, img) }
	readOnMounts(t, cache, 1, read)
	readOnMounts(t, cache, fleetMounts-1, read)
	n, sent := originBlobGETs(origin)
	asked := cacheBlobGETs(cache)
	for _, l := range img.Layers {
		t.Logf("blob %s, %d bytes: %d mounts sent the cache %d GETs; the origin served %d GETs, %.1f copies",
			l.Digest.Encoded()[:12], l.Size, fleetMounts, asked[l.Digest], n[l.Digest], float64(sent[l.Digest])/float64(l.Size))
		if n[l.Digest] != 1 || sent[l.Digest] != l.Size {
			t.Errorf("blob %s: origin served %d GETs, %d bytes; want 1 and the blob's %d", l.Digest, n[l.Digest], sent[l.Digest], l.Size)
		}
	}
	t.Logf("origin: %s", origin.Stats())
}

// fleetLargeSize is the file of fleetLargeImage: its blob passes 16 MiB,
// the most the client once skipped through a whole-blob answer.
const fleetLargeSize = 18 << 20

// fleetLargeImage is one gzip layer holding one incompressible file of
// fleetLargeSize bytes.
func fleetLargeImage(t *testing.T) *registrytest.Image {
	t.Helper()
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: []registrytest.Entry{
		registrytest.Dir("opt"), registrytest.GeneratedFile("opt/big.bin", fleetLargeSize, 21, false)}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// fleetLargeRead reads 256 KiB past 17 MiB of the layer's blob, then of
// the file in rootfs/, and compares them with what was pushed.
func fleetLargeRead(mnt string, img *registrytest.Image) error {
	root := filepath.Join(mnt, fleetRef)
	const off, n = 17 << 20, 256 << 10
	l := img.Layers[0]
	blob, err := l.BlobBytes()
	if err != nil {
		return err
	}
	got := make([]byte, n)
	if err := readAtFile(filepath.Join(root, "layers", chainIDs(img.DiffIDs)[0], "blob"), got, off); err != nil {
		return err
	}
	if !bytes.Equal(got, blob[off:off+n]) {
		return fmt.Errorf("layer blob [%d,%d): bytes differ from the origin's", off, off+n)
	}
	if err := readAtFile(filepath.Join(root, "rootfs", "opt", "big.bin"), got, off); err != nil {
		return err
	}
	if want := img.RootFS()["opt/big.bin"].Data()[off : off+n]; !bytes.Equal(got, want) {
		return fmt.Errorf("rootfs/opt/big.bin [%d,%d): bytes differ from the pushed file's", off, off+n)
	}
	return nil
}

// originCopies is how many whole copies of l's blob the origin sent, and
// in how many GETs.
func originCopies(origin *registrytest.Registry, l *registrytest.Layer) (copies float64, gets int) {
	n, sent := originBlobGETs(origin)
	return float64(sent[l.Digest]) / float64(l.Size), n[l.Digest]
}

// A layer over 16 MiB, read past 16 MiB through a cold cache: a miss
// answers each Range with the whole blob, which regfs reads to its end
// (so the cache stores it) and uses for the bytes asked. One mount reads
// first, then the others: the blob leaves the origin once.
func TestFleetColdCacheLargeLayer(t *testing.T) {
	img := fleetLargeImage(t)
	origin, cache := fleetSetup(t, img)
	read := func(mnt string) error { return fleetLargeRead(mnt, img) }
	readOnMounts(t, cache, 1, read)
	readOnMounts(t, cache, fleetMounts-1, read)
	l := img.Layers[0]
	copies, gets := originCopies(origin, l)
	t.Logf("blob of %d bytes, one mount then %d: %d mounts sent the cache %d GETs; the origin served %d GETs, %.2f copies",
		l.Size, fleetMounts-1, fleetMounts, cacheBlobGETs(cache)[l.Digest], gets, copies)
	if gets != 1 || copies != 1 {
		t.Errorf("origin: got %d GETs, %.2f copies of the blob; want 1 and 1", gets, copies)
	}
}

// The same layer read by all mounts at once: right bytes everywhere. Each
// mount's first GET is a miss the cache streams from the origin, and only
// one of those concurrent misses is kept (the cache's rule), so the origin
// serves a copy per mount and more: a mount that read a copy the cache did
// not keep asks again. The test logs how many.
func TestFleetColdCacheLargeLayerAtOnce(t *testing.T) {
	img := fleetLargeImage(t)
	origin, cache := fleetSetup(t, img)
	readOnMounts(t, cache, fleetMounts, func(mnt string) error { return fleetLargeRead(mnt, img) })
	l := img.Layers[0]
	copies, gets := originCopies(origin, l)
	t.Logf("blob of %d bytes, %d mounts at once: they sent the cache %d GETs; the origin served %d GETs, %.2f copies",
		l.Size, fleetMounts, cacheBlobGETs(cache)[l.Digest], gets, copies)
	if copies > float64(gets) {
		t.Errorf("origin: %.2f copies in %d GETs, more than a whole copy each", copies, gets)
	}
}
