package mounttest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// The cross-registry disk-cache poisoning of issue 10, through real
// mounts: a registry answering the image's layer digests with other bytes
// is mounted and a rootfs file read twice; then an honest registry mounted
// on the same --cache-dir, the image pinned by digest, must serve every
// layer blob hashing to its digest.
func TestCacheNotPoisonedAcrossRegistries(t *testing.T) {
	r, fx := cacheRegistry(t)
	img := fx.Small
	var targets []digest.Digest
	for _, l := range img.Layers {
		targets = append(targets, l.Digest)
	}
	evil := registrytest.StartEvilRegistry(t, r, registrytest.LieWrongBytes, targets...)
	dir := t.TempDir()
	ref := "test/small@" + img.Digest.String()

	p1 := startCacheMount(t, evil.Host, dir)
	rootfs := filepath.Join(p1.mnt, ref, "rootfs", "var/lib/data.bin")
	for range 2 {
		_, _ = os.ReadFile(rootfs) // wrong bytes: an error, or (before the fix) cached garbage
	}
	for _, p := range blobPaths(p1.mnt, ref, img) {
		_, _ = os.ReadFile(p) // a whole pass: fails on the digest
	}
	stopCacheMount(t, p1)
	if evil.Lies() == 0 {
		t.Fatal("the evil registry never lied: the test tests nothing")
	}

	p2 := startCacheMount(t, r.Host, dir)
	readBlobs(t, p2.mnt, ref, img) // each blob must hash to its digest
	stopCacheMount(t, p2)
}

// --verify=strict through a real mount: nothing of a blob that does not
// hash to its digest is served, not even the first read of a file.
func TestStrictMountServesNoWrongByte(t *testing.T) {
	r, fx := cacheRegistry(t)
	img := fx.Small
	var targets []digest.Digest
	for _, l := range img.Layers {
		targets = append(targets, l.Digest)
	}
	evil := registrytest.StartEvilRegistry(t, r, registrytest.LieOnRanges, targets...)
	ref := "test/small@" + img.Digest.String()
	p := startCacheMount(t, evil.Host, t.TempDir(), "--verify", "strict")
	for i, path := range blobPaths(p.mnt, ref, img) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := f.ReadAt(buf, img.Layers[i].Size/2) // a random read: by range, where it lies
		f.Close()
		if err == nil && string(buf[:n]) != string(img.Layers[i].Blob[img.Layers[i].Size/2:][:n]) {
			t.Errorf("%s: a strict read served wrong bytes", path)
		}
	}
	// A strict pass may have been served whole and honest (the lies are on
	// ranges), so success is allowed; a wrong byte is not.
	got, err := os.ReadFile(filepath.Join(p.mnt, ref, "rootfs", "var/lib/data.bin"))
	if want := (registrytest.Generated{Seed: 12, Size: 70000}).Bytes(); err == nil && !bytes.Equal(got, want) {
		t.Error("rootfs file of lying layers, strict: served wrong bytes")
	}
	stopCacheMount(t, p)
}
