package mounttest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regfs/regfs/registry/registrytest"
)

// A gzip image's layer index, persisted by one mount, serves the next mount
// with the block cache emptied: `ls -R rootfs` asks for no blob byte and
// the first read of one small file asks only for the bytes from its
// checkpoint on, not the layer (an index pass). Blocks are removed by
// `regfs cache clear --keep-indexes`: the indexes live in the same disk
// tier (scripts/bench once removed the whole directory, indexes included,
// and measured an index pass).
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
	firstByteBy := map[string]int64{}
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
			// Bytes served by a stream run on after the read that started
			// it (the server writes ahead): the requests themselves are
			// what a read costs, counted as they arrive.
			blobGETs := func(from int) (n int, firstByte int64) {
				firstByte = -1
				for _, q := range r.Requests()[from:] {
					if q.Method != http.MethodGet || !strings.HasSuffix(q.Path, "/blobs/"+layer.Digest.String()) {
						continue
					}
					n++
					var a int64
					if _, err := fmt.Sscanf(q.Range, "bytes=%d-", &a); err != nil {
						a = 0 // the whole blob
					}
					if firstByte < 0 || a < firstByte {
						firstByte = a
					}
				}
				return n, firstByte
			}
			from := len(r.Requests())
			if got := readFile(t, filepath.Join(rootfs(p2.mnt), target.Name)); !bytes.Equal(got, target.Data()) {
				t.Fatalf("%s (second mount): got %d bytes, want the layer's %d", target.Name, len(got), target.Size())
			}
			n, first := blobGETs(from)
			firstByteBy[spacing] = first
			t.Logf("second mount, blocks removed: cat of %s: %d blob requests from byte %d of the layer's %d", target.Name, n, first, layer.Size)
			// An index pass reads the whole layer from byte 0; the last
			// file's checkpoint is near the layer's end.
			if n == 0 || first < layer.Size/2 {
				t.Errorf("first cat on a mount over the persisted index: got %d blob requests from byte %d, want some, all in the second half of the %d-byte layer", n, first, layer.Size)
			}
			from = len(r.Requests())
			if got := lsR(p2.mnt); !bytes.Equal(got, wantLs) {
				t.Errorf("ls -R rootfs (second mount): got %d bytes of listing, want the first mount's %d", len(got), len(wantLs))
			}
			if n, _ := blobGETs(from); n != 0 {
				t.Errorf("ls -R rootfs on a mount over the persisted index: got %d blob requests, want none", n)
			}
			stopCacheMount(t, p2)
		})
	}
	if firstByteBy["256K"] <= firstByteBy["2M"] {
		t.Errorf("first cat over the persisted index: fetched from byte %d with 256 KiB checkpoint spacing, from %d with 2 MiB; want a later start (a closer checkpoint) with the closer spacing", firstByteBy["256K"], firstByteBy["2M"])
	}
}
