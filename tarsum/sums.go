package tarsum

import (
	"cmp"
	"path"
	"slices"
)

// FileSum is one archive entry's digest.
type FileSum struct {
	// Name is the entry's path cleaned and made relative ("./a/b/" → "a/b",
	// "/" → "."): entries with equal Names are the same path.
	Name string
	// Sum is the lower-case hex digest of the entry's header fields and body.
	Sum string
	// Position counts entries from 0 in archive order.
	Position int
}

// entryPath names an entry the way docker groups same-path entries.
func entryPath(name string) string {
	return path.Join(".", path.Join("/", name))
}

// orderForFinalSum returns the entries in the order their sums enter the
// final hash: sorted by sum, except that the entries of one path fill the
// places their sums sorted to in order of occurrence (spec, "List of file
// sums"; docker commit c5e6362).
func orderForFinalSum(files []FileSum) []FileSum {
	ordered := slices.Clone(files)
	slices.SortFunc(ordered, func(a, b FileSum) int {
		return cmp.Or(cmp.Compare(a.Sum, b.Sum), cmp.Compare(a.Position, b.Position))
	})
	slots := make(map[string][]int, len(ordered))
	for i, f := range ordered {
		slots[f.Name] = append(slots[f.Name], i)
	}
	for _, places := range slots {
		if len(places) < 2 {
			continue
		}
		same := make([]FileSum, len(places))
		for k, i := range places {
			same[k] = ordered[i]
		}
		slices.SortFunc(same, func(a, b FileSum) int { return cmp.Compare(a.Position, b.Position) })
		for k, i := range places {
			ordered[i] = same[k]
		}
	}
	return ordered
}
