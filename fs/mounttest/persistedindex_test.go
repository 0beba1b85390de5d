package mounttest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/regfs/regfs/registry/registrytest"
)

// A gzip image's layer index, persisted by one mount, serves the next mount
// with the block cache emptied: `ls -R rootfs` fetches no blob byte and the
// first read of one small file fetches about a checkpoint span, not the
// layer (an index pass). Blocks are removed by `regfs cache clear
// --keep-indexes`: the indexes live in the same disk tier (scripts/bench
// once removed the whole directory, indexes included, and measured an index
// pass).
func TestPersistedIndexWithoutBlocks(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t)
	const repo, tag = "test/persisted", "gzip"
	// About 10 MiB of small files (70 % compressible), so the layer has a
	// few checkpoints (2 MiB apart, uncompressed) and the last file's span
	// is a small part of it.
	entries := []registrytest.Entry{registrytest.Dir("srv")}
	for i := 0; i < 4000; i++ {
		if i%100 == 0 {
			entries = append(entries, registrytest.Dir(fmt.Sprintf("srv/d%02d", i/100)))
		}
		entries = append(entries, registrytest.GeneratedFile(fmt.Sprintf("srv/d%02d/f%04d", i/100, i), int64(1024+(i*997)%3072), uint64(i+1), i%10 < 7))
	}
	layer, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(r).PushImage(context.Background(), repo, img, tag); err != nil {
		t.Fatal(err)
	}
	target := entries[len(entries)-1]
	rootfs := func(mnt string) string { return filepath.Join(mnt, repo+":"+tag, "rootfs") }
	lsR := func(mnt string) []byte {
		t.Helper()
		cmd := exec.Command("ls", "-R", ".")
		cmd.Dir = rootfs(mnt) // the listing then names no mountpoint
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ls -R %s: %v", rootfs(mnt), err)
		}
		return out
	}

	// A closer spacing of checkpoints (--checkpoint-spacing) fetches less
	// for the same read.
	fetchedBy := map[string]int64{}
	for _, spacing := range []string{"2M", "256K"} {
		t.Run("spacing "+spacing, func(t *testing.T) {
			dir := t.TempDir()
			p1 := startCacheMount(t, r.Host, dir, "--block-size", "64K", "--checkpoint-spacing", spacing) // small blocks: the spacing shows
			if _, err := os.Stat(rootfs(p1.mnt)); err != nil {
				t.Skipf("no rootfs/ in this build: %v", err)
			}
			wantLs := lsR(p1.mnt) // the index pass; its index is saved before ls returns
			if got := readFile(t, filepath.Join(rootfs(p1.mnt), target.Name)); !bytes.Equal(got, target.Data()) {
				t.Fatalf("%s (first mount): got %d bytes, want the layer's %d", target.Name, len(got), target.Size())
			}
			stopCacheMount(t, p1)

			// The blocks go, the index stays: what `regfs cache clear
			// --keep-indexes` is for.
			if du := cacheDuOf(t, dir); du.Blobs == 0 || du.Files != 1 {
				t.Fatalf("cache dir after the first mount: got %d blobs and %d index files, want some blobs and 1 index", du.Blobs, du.Files)
			}
			if out, err := regfsCache(dir, "clear", "--keep-indexes"); err != nil {
				t.Fatalf("regfs cache clear --keep-indexes: %v: %s", err, out)
			}
			if du := cacheDuOf(t, dir); du.Blobs != 0 || du.Files != 1 {
				t.Fatalf("after cache clear --keep-indexes: got %d blobs and %d index files, want none and 1", du.Blobs, du.Files)
			}

			p2 := startCacheMount(t, r.Host, dir, "--block-size", "64K", "--checkpoint-spacing", spacing)
			if _, err := os.Stat(rootfs(p2.mnt)); err != nil {
				t.Fatal(err)
			}
			before := r.Stats().BlobBytesServed
			if got := readFile(t, filepath.Join(rootfs(p2.mnt), target.Name)); !bytes.Equal(got, target.Data()) {
				t.Fatalf("%s (second mount): got %d bytes, want the layer's %d", target.Name, len(got), target.Size())
			}
			cat := r.Stats().BlobBytesServed - before
			fetchedBy[spacing] = cat
			t.Logf("second mount, blocks removed: cat of %s fetched %d of the layer's %d bytes", target.Name, cat, layer.Size)
			// An index pass reads the whole layer; the last file's checkpoint is at
			// most 2 MiB (uncompressed) before it, near the layer's end.
			if cat == 0 || cat > layer.Size/2 {
				t.Errorf("first cat on a mount over the persisted index: got %d blob bytes fetched, want some but at most %d (half the %d-byte layer)", cat, layer.Size/2, layer.Size)
			}
			before = r.Stats().BlobBytesServed
			if got := lsR(p2.mnt); !bytes.Equal(got, wantLs) {
				t.Errorf("ls -R rootfs (second mount): got %d bytes of listing, want the first mount's %d", len(got), len(wantLs))
			}
			if got := r.Stats().BlobBytesServed - before; got != 0 {
				t.Errorf("ls -R rootfs on a mount over the persisted index: got %d blob bytes fetched, want 0", got)
			}
			stopCacheMount(t, p2)
		})
	}
	if fetchedBy["256K"] == 0 || fetchedBy["256K"] >= fetchedBy["2M"] {
		t.Errorf("first cat over the persisted index: %d bytes with 256 KiB checkpoint spacing, %d with 2 MiB; want fewer with the closer spacing", fetchedBy["256K"], fetchedBy["2M"])
	}
}
