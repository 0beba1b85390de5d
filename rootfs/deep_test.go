package rootfs

import (
	"archive/tar"
	"runtime"
	"testing"

	"github.com/regfs/regfs/layerindex"
)

// deepLayers is a chain of depth nested directories "d/d/…", with a file
// at the bottom, in a base layer; an upper layer adds a file at every
// tenth level and whites out a sibling, so every layer is consulted.
func deepLayers(t *testing.T, depth int) ([]string, []*Merged) {
	t.Helper()
	var base, upper []string
	dir := ""
	var dirs []string
	for i := 0; i < depth; i++ {
		dir = joinName(dir, "d")
		dirs = append(dirs, dir)
		base = append(base, "d:"+dir+"/")
		if i%10 == 0 {
			base = append(base, "f:"+joinName(dir, "gone"))
			upper = append(upper, "f:"+joinName(dir, "new"), "f:"+joinName(dir, WhiteoutPrefix+"gone"))
		}
	}
	base = append(base, "f:"+joinName(dir, "bottom"))
	m := Merge([]*layerindex.Index{layerOf(t, base...), layerOf(t, upper...)})
	return dirs, []*Merged{m}
}

// find(1) over a 2,000-deep tree: each level's listing and lookups cost
// work linear in the level's depth (hashing its path), so the walk is
// quadratic in depth, not cubic: the bytes it allocates stay within a
// constant times depth².
func TestDeepTreeWalkLinearPerLevel(t *testing.T) {
	const depth = 2000
	dirs, ms := deepLayers(t, depth)
	m := ms[0]
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m.lookups.Store(0)
	seen := 0
	walk := func(dir string) {
		for _, c := range m.Children(dir) {
			seen++
			if _, ok := m.Lookup(c.Name); !ok {
				t.Fatalf("Lookup(%q): missing after Children listed it", c.Name)
			}
		}
	}
	walk("")
	for _, d := range dirs {
		walk(d)
	}
	runtime.ReadMemStats(&after)
	if want := depth + depth/10 + 1; seen != want {
		t.Fatalf("entries walked: got %d, want %d", seen, want)
	}
	if e, ok := m.Lookup(joinName(dirs[depth-1], "bottom")); !ok || e.Type != tar.TypeReg {
		t.Fatalf("bottom file: got %+v, %v", e, ok)
	}
	if _, ok := m.Lookup(joinName(dirs[0], "gone")); ok {
		t.Fatal("whited-out file still visible")
	}
	// Names are about 2·depth bytes long at the bottom: a quadratic walk
	// allocates some dozens of depth² bytes, a cubic one thousands.
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(64*depth*depth); got > limit {
		t.Errorf("walk of a %d-deep tree allocated %d bytes, want at most %d (64·depth²): per-level work grows faster than the depth", depth, got, limit)
	}
	// Per level: a listing and a lookup per child, each a few index
	// lookups per layer, not one per ancestor.
	if got, limit := m.lookups.Load(), int64(12*len(m.layers)*(seen+depth)); got > limit {
		t.Errorf("walk made %d index lookups, want at most %d", got, limit)
	}
	t.Logf("depth %d: %d bytes allocated, %d index lookups", depth, after.TotalAlloc-before.TotalAlloc, m.lookups.Load())
}
