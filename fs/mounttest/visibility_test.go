package mounttest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// statsImages is the per-image part of .regfs/stats.
type statsImages struct {
	Images []struct {
		Path           string  `json:"path"`
		Digest         string  `json:"digest"`
		Size           int64   `json:"size"`
		FetchedBytes   int64   `json:"fetched_bytes"`
		FetchedPercent float64 `json:"fetched_percent"`
		Layers         []struct {
			ID             string  `json:"id"`
			Digest         string  `json:"digest"`
			Size           int64   `json:"size"`
			FetchedBytes   int64   `json:"fetched_bytes"`
			FetchedPercent float64 `json:"fetched_percent"`
			IndexState     string  `json:"index_state"`
			TarSize        *int64  `json:"tar_size"`
		} `json:"layers"`
	} `json:"images"`
	Cache map[string]any `json:"cache"`
}

// .regfs/stats shows, per image shown and per layer, the size, the bytes
// fetched and their percent, and the index state.
func TestStatsPerImageAndLayer(t *testing.T) {
	p := startRegfs(t)
	img := fixtures.Small
	ids := chainIDs(img.DiffIDs)
	dir := filepath.Join(p.mnt, "test/small:latest")
	readFile(t, filepath.Join(dir, "layers", ids[0], "blob"))                             // layer 1: fetched whole
	if _, err := os.Stat(filepath.Join(dir, "layers", ids[1], "layer.tar")); err != nil { // layer 2: indexed
		t.Fatal(err)
	}
	var st statsImages
	if err := json.Unmarshal(readFile(t, filepath.Join(p.mnt, ".regfs/stats")), &st); err != nil {
		t.Fatalf(".regfs/stats: %v", err)
	}
	if st.Cache == nil {
		t.Errorf(".regfs/stats: the cache stats are gone")
	}
	if len(st.Images) != 1 || st.Images[0].Path != "test/small:latest" || st.Images[0].Digest != img.Digest.String() || len(st.Images[0].Layers) != 3 {
		t.Fatalf(".regfs/stats images: got %+v, want test/small:latest %s with 3 layers", st.Images, img.Digest)
	}
	im := st.Images[0]
	var size int64
	for i, l := range im.Layers {
		want := img.Layers[i]
		size += want.Size
		if l.ID != ids[i] || l.Digest != want.Digest.String() || l.Size != want.Size {
			t.Errorf("layer %d: got %s %s size %d, want %s %s size %d", i+1, l.ID, l.Digest, l.Size, ids[i], want.Digest, want.Size)
		}
		switch i {
		case 0, 1: // read whole: by the blob read, by the index pass (a
			// range fetched twice counts twice: at least the size)
			if l.FetchedBytes < want.Size || l.FetchedPercent != 100 {
				t.Errorf("layer %d: got %d bytes fetched (%v%%), want all %d (100%%)", i+1, l.FetchedBytes, l.FetchedPercent, want.Size)
			}
		case 2:
			if l.FetchedBytes != 0 || l.FetchedPercent != 0 || l.IndexState != "idle" || l.TarSize != nil {
				t.Errorf("layer 3, never read: got %+v, want nothing fetched, index idle", l)
			}
		}
		if i == 1 && (l.IndexState != "ready" || l.TarSize == nil || *l.TarSize != want.UncompressedSize) {
			t.Errorf("layer 2 after stat layer.tar: got index %q tar size %v, want ready and %d", l.IndexState, l.TarSize, want.UncompressedSize)
		}
	}
	if fetched := im.Layers[0].FetchedBytes + im.Layers[1].FetchedBytes; im.Size != size || im.FetchedBytes != fetched {
		t.Errorf("image: got size %d fetched %d, want %d and its layers' %d", im.Size, im.FetchedBytes, size, fetched)
	}
}

// A --platform an index does not list: the image directory shows only
// index.json and platforms/, and says why once in the log, however often
// it is looked at.
func TestPlatformNotInIndexIsLogged(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "log") // read while regfs runs (its stderr buffer is not safe to)
	p := startRegfs(t, "--platform", "linux/riscv64", "--log-file", logFile)
	logText := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	dir := filepath.Join(p.mnt, "test/multi:latest")
	for range 3 {
		if got := readdir(t, dir); !slices.Equal(got, []string{"index.json", "oci", "platforms"}) {
			t.Fatalf("ls %s: got %v, want [index.json oci platforms]", dir, got)
		}
		if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the log line", func() bool { return strings.Contains(logText(), "no manifest for this --platform") })
	log := logText()
	if n := strings.Count(log, "no manifest for this --platform"); n != 1 || !strings.Contains(log, "linux/riscv64") || !strings.Contains(log, "linux/arm64/v8") {
		t.Errorf("log: got %d lines about the platform, want 1 naming linux/riscv64 and the index's platforms:\n%s", n, log)
	}
}
