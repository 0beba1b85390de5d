package mounttest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// The first read of one small file under rootfs/ of an eStargz image, on a
// fresh mount with an empty cache, fetches the footer, the TOC and that
// file's chunk: a few blocks, not the image (getting rootfs/ ready once
// started a full index pass over every layer).
func TestEStargzRootfsReadIsLazy(t *testing.T) {
	needFUSE(t)
	img := pushEStargzImage(t, "test/estargz-lazy", 16<<20)
	var small registrytest.Entry
	for _, e := range img.Layers[0].Entries {
		if e.Type == tar.TypeReg && e.Size() > 1<<10 && e.Size() < 32<<10 {
			small = e
			break
		}
	}
	if small.Name == "" {
		t.Fatal("no small file in the layer")
	}
	const blockSize = 64 << 10
	p := startCacheMount(t, reg.Host, t.TempDir(), "--block-size", "64K")
	bytes0 := blobBytes(reg)
	path := filepath.Join(p.mnt, "test/estargz-lazy:latest/rootfs", small.Name)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, small.Data()) {
		t.Fatalf("%s: got %d bytes that differ from the layer's %d", small.Name, len(got), len(small.Data()))
	}
	// A background index pass, if one were started, would go on fetching:
	// wait until no layer's index is being built before counting.
	deadline := time.Now().Add(20 * time.Second)
	for building(t, p.mnt) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	fetched, image := blobBytes(reg)-bytes0, imageBlobSize(img)
	share := float64(fetched) / float64(image)
	t.Logf("first read of %s (%d bytes): %d blob bytes of the image's %d (%.2f %%)", small.Name, small.Size(), fetched, image, 100*share)
	// Footer, TOC and the chunk, each rounded out to blocks.
	if share > 0.03 {
		for _, q := range reg.Requests() {
			if isBlobGET(q) {
				t.Logf("%s %s range %q: %d bytes", q.Method, q.Path, q.Range, q.Bytes)
			}
		}
		t.Errorf("blob bytes fetched for one small file: got %d (%.2f %%), want at most 3 %% of the image's %d (block size %d)", fetched, 100*share, image, blockSize)
	}
}

// building reports whether .regfs/stats lists an index build running.
func building(t *testing.T, mnt string) bool {
	t.Helper()
	var st struct {
		IndexBuilds map[string]struct {
			State string `json:"state"`
		} `json:"index_builds"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(mnt, ".regfs/stats")), &st); err != nil {
		t.Fatalf(".regfs/stats: %v", err)
	}
	for _, b := range st.IndexBuilds {
		if b.State == "building" {
			return true
		}
	}
	return false
}
