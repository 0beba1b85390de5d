package fs

import (
	"encoding/json"
	"testing"

	"github.com/regfs/regfs/layerindex"
)

// .regfs/stats shows the caller's stats and, per layer blob, its index build.
func TestStatsIndexBuilds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stats     func() any
		wantStats string // the caller's part, as JSON
	}{
		{"object", func() any { return map[string]int{"requests": 7} }, `{"requests":7}`},
		{"not an object", func() any { return []int{1, 2} }, `{"stats":[1,2]}`},
		{"no stats", nil, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.Status = &Status{Version: "v", Stats: tc.stats} })
			var before map[string]json.RawMessage
			if err := json.Unmarshal(h.readFile("/.regfs/stats"), &before); err != nil {
				t.Fatalf("stats: %v", err)
			}
			if got := string(before["index_builds"]); got != "{}" {
				t.Errorf("index_builds before any layer is used: got %s, want {}", got)
			}
			delete(before, "index_builds")
			if got, _ := json.Marshal(before); string(got) != tc.wantStats {
				t.Errorf("stats without index_builds: got %s, want %s", got, tc.wantStats)
			}

			h.readdir("/test/small:latest/rootfs")
			var after struct {
				IndexBuilds map[string]layerindex.Progress `json:"index_builds"`
			}
			if err := json.Unmarshal(h.readFile("/.regfs/stats"), &after); err != nil {
				t.Fatalf("stats: %v", err)
			}
			if got, want := len(after.IndexBuilds), len(h.small.img.Layers); got != want {
				t.Errorf("index_builds after listing rootfs/: got %d layers (%v), want %d", got, after.IndexBuilds, want)
			}
			for i, l := range h.small.img.Layers {
				p, ok := after.IndexBuilds[l.Digest.String()]
				if want := int64(len(h.small.blobs[i])); !ok || p.State != layerindex.IndexReady || p.Done != want || p.Total != want {
					t.Errorf("index_builds[%s]: got %+v (present %v), want ready %d/%d", l.Digest, p, ok, want, want)
				}
			}
		})
	}
}
