package mounttest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/regfs/regfs/registry/registrytest"
)

// The first read of one small file under rootfs/ of an eStargz image, on a
// fresh mount with an empty cache, fetches exactly the format probe, the
// footer, the TOC and that file's chunk: not the cache blocks around them,
// and not the image (getting rootfs/ ready once started a full index pass
// over every layer).
func TestEStargzRootfsReadIsLazy(t *testing.T) {
	needFUSE(t)
	img := pushEStargzImage(t, "test/estargz-lazy", 16<<20)
	small := smallFile(t, img.Layers[0])
	p := startCacheMount(t, reg.Host, t.TempDir(), "--block-size", "1M") // regfs's default blocks
	requests0 := len(reg.Requests())
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
	// Per layer: the 4-byte probe, the footer, the TOC with the footer;
	// then the file's one chunk (its gzip member: the file plus a little).
	var want int64
	wantGETs := 1
	for _, l := range img.Layers {
		want += 4 + estargz.FooterSize + stargzTail(t, l.Blob)
		wantGETs += 3
	}
	want += small.Size() + 1<<10
	var fetched int64
	var gets []registrytest.Request
	for _, q := range reg.Requests()[requests0:] {
		if isBlobGET(q) && !strings.HasSuffix(q.Path, img.ConfigDigest.String()) {
			gets = append(gets, q)
			fetched += q.Bytes
		}
	}
	image := imageBlobSize(img)
	t.Logf("first read of %s (%d bytes): %d blob bytes of the image's %d (%.3f %%) in %d GETs", small.Name, small.Size(), fetched, image, 100*float64(fetched)/float64(image), len(gets))
	if fetched > want || len(gets) > wantGETs {
		for _, q := range gets {
			t.Logf("%s %s range %q: %d bytes", q.Method, q.Path, q.Range, q.Bytes)
		}
		t.Errorf("blob bytes fetched for one small file: got %d in %d GETs, want at most %d (probe, footer, TOC, chunk) in %d", fetched, len(gets), want, wantGETs)
	}
}

// stargzTail is the size of an eStargz blob's TOC and footer.
func stargzTail(t *testing.T, blob []byte) int64 {
	t.Helper()
	if len(blob) < estargz.FooterSize {
		t.Fatalf("eStargz blob of %d bytes: no footer", len(blob))
	}
	_, tocOff, _, err := new(estargz.GzipDecompressor).ParseFooter(blob[len(blob)-estargz.FooterSize:])
	if err != nil {
		t.Fatalf("eStargz footer: %v", err)
	}
	return int64(len(blob)) - tocOff
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
