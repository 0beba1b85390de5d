package mounttest

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// .regfs/stats of the real binary lists each layer's index build.
func TestCLIStatsIndexBuilds(t *testing.T) {
	p := startRegfs(t)
	readdir(t, filepath.Join(p.mnt, "test/small:latest/rootfs"))
	var st struct {
		IndexBuilds map[string]struct {
			State       string `json:"state"`
			Done, Total int64
		} `json:"index_builds"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(p.mnt, ".regfs/stats")), &st); err != nil {
		t.Fatalf(".regfs/stats: %v", err)
	}
	for _, l := range fixtures.Small.Layers {
		b, ok := st.IndexBuilds[l.Digest.String()]
		if !ok || b.State != "ready" || b.Done != l.Size || b.Total != l.Size {
			t.Errorf("index_builds[%s]: got %+v (present %v), want ready %d/%d", l.Digest, b, ok, l.Size, l.Size)
		}
	}
}
