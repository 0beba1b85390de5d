package rootfs

import (
	"archive/tar"

	"github.com/regfs/regfs/layerindex"
)

// LinkCounts is, for one layer's own tree, the number of paths sharing
// each hardlink target's data (target name → count); absent means 1.
func LinkCounts(x *layerindex.Index) map[string]int {
	counts := map[string]int{}
	for t, names := range linkGroups(x) {
		counts[t] = len(names)
	}
	return counts
}

// linkGroups maps each hardlink target of x to every path sharing its data
// (the target and its links); files without links are left out.
func linkGroups(x *layerindex.Index) map[string][]string {
	groups := map[string][]string{}
	for _, e := range x.Entries() {
		if e.Type != tar.TypeLink {
			continue
		}
		t, err := x.Resolve(e)
		if err != nil {
			continue
		}
		if groups[t.Name] == nil {
			groups[t.Name] = []string{t.Name}
		}
		groups[t.Name] = append(groups[t.Name], e.Name)
	}
	return groups
}
