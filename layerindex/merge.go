package layerindex

// Merging an image's layers into the filesystem they make together, as
// docker and containerd apply them (the OCI image spec's "Applying
// Changesets"): layers applied base first; a later entry replaces an
// earlier one at the same path (a directory over a directory keeps the
// children and takes the later metadata); a non-directory over a directory
// removes what was under it; ".wh.<name>" removes <name> from the layers
// below; ".wh..wh..opq" in a directory removes everything the layers below
// put in it. Whiteouts act only on the layers below their own, and are
// never shown in the merged tree.
//
// This file is owned by the fs/ work (it serves rootfs/), kept here because
// it is index work, not FUSE work. It answers lazily, per path: nothing is
// flattened up front.

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
)

const (
	// WhiteoutPrefix marks a deletion of the name after it.
	WhiteoutPrefix = ".wh."
	// OpaqueWhiteout in a directory hides the lower layers' content of it.
	OpaqueWhiteout = ".wh..wh..opq"
)

// IsWhiteout reports whether a path's last element is a whiteout or an
// opaque marker.
func IsWhiteout(name string) bool {
	return strings.HasPrefix(path.Base(name), WhiteoutPrefix)
}

// Merged is the merged tree of some layers' indexes. Safe for concurrent use.
type Merged struct {
	layers []*Index // base first

	linksOnce sync.Once
	links     map[mergedLinkKey]int
}

type mergedLinkKey struct {
	layer  int
	target string
}

// MergedEntry is a visible entry and the layer (0 = base) it comes from.
type MergedEntry struct {
	*Entry
	Layer int
}

// Merge returns the merged view of layers, base first. It does no work
// until asked.
func Merge(layers []*Index) *Merged {
	return &Merged{layers: layers}
}

// Layers is the number of layers merged.
func (m *Merged) Layers() int { return len(m.layers) }

// Index returns layer i's index.
func (m *Merged) Index(i int) *Index { return m.layers[i] }

func joinName(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func parentName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}

// hidesBelow reports whether layer i hides, from the layers below it,
// whatever they have at name (a non-empty path).
func (m *Merged) hidesBelow(i int, name string) bool {
	x := m.layers[i]
	if _, ok := x.byName[joinName("", OpaqueWhiteout)]; ok {
		return true // the root is opaque in this layer
	}
	p := ""
	for _, el := range strings.Split(name, "/") {
		dir := p
		p = joinName(dir, el)
		if _, ok := x.byName[joinName(dir, WhiteoutPrefix+el)]; ok {
			return true
		}
		if p == name {
			break
		}
		// p is a strict ancestor of name.
		if _, ok := x.byName[joinName(p, OpaqueWhiteout)]; ok {
			return true
		}
		if e, ok := x.byName[p]; ok && e.Type != tar.TypeDir {
			return true
		}
	}
	return false
}

// Lookup returns the visible entry at name ("" is the root).
func (m *Merged) Lookup(name string) (MergedEntry, bool) {
	if len(m.layers) == 0 {
		return MergedEntry{}, false
	}
	if name == "" {
		// The top-most root entry the tars list; a made-up one otherwise.
		for i := len(m.layers) - 1; i >= 0; i-- {
			if r := m.layers[i].Root(); !r.Implicit {
				return MergedEntry{Entry: r, Layer: i}, true
			}
		}
		return MergedEntry{Entry: m.layers[len(m.layers)-1].Root(), Layer: len(m.layers) - 1}, true
	}
	if IsWhiteout(name) {
		return MergedEntry{}, false
	}
	// A directory a layer only implies takes the metadata of a directory
	// a lower layer lists at the same path, if one shows through.
	var implied *MergedEntry
	for i := len(m.layers) - 1; i >= 0; i-- {
		if e, ok := m.layers[i].byName[name]; ok {
			switch {
			case e.Type == tar.TypeDir && e.Implicit:
				if implied == nil {
					implied = &MergedEntry{Entry: e, Layer: i}
				}
			case e.Type == tar.TypeDir:
				return MergedEntry{Entry: e, Layer: i}, true
			case implied != nil:
				return *implied, true // the upper directory replaced this non-directory
			default:
				return MergedEntry{Entry: e, Layer: i}, true
			}
		}
		if m.hidesBelow(i, name) {
			break
		}
	}
	if implied != nil {
		return *implied, true
	}
	return MergedEntry{}, false
}

// Children returns the visible entries directly in directory dir, sorted
// by name; none if dir is not a visible directory.
func (m *Merged) Children(dir string) []MergedEntry {
	if d, ok := m.Lookup(dir); !ok || d.Type != tar.TypeDir {
		return nil
	}
	names := map[string]bool{}
	for i := len(m.layers) - 1; i >= 0; i-- {
		x := m.layers[i]
		if dir != "" {
			if e, ok := x.byName[dir]; ok && e.Type != tar.TypeDir {
				break
			}
		}
		for _, c := range x.Children(dir) {
			if !IsWhiteout(c.Name) {
				names[path.Base(c.Name)] = true
			}
		}
		if _, ok := x.byName[joinName(dir, OpaqueWhiteout)]; ok {
			break
		}
		if dir != "" && m.hidesBelow(i, dir) {
			break
		}
	}
	out := make([]MergedEntry, 0, len(names))
	for n := range names {
		if e, ok := m.Lookup(joinName(dir, n)); ok {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Resolve follows a hardlink to the entry holding the data, and its layer.
// A link to a path its own layer lacks names what the layers below show
// there (an extraction links to what is on disk by then).
func (m *Merged) Resolve(e MergedEntry) (MergedEntry, error) {
	if e.Type != tar.TypeLink {
		return e, nil
	}
	if t, err := m.layers[e.Layer].Resolve(e.Entry); err == nil {
		return MergedEntry{Entry: t, Layer: e.Layer}, nil
	}
	below := Merge(m.layers[:e.Layer])
	t, ok := below.Lookup(e.Linkname)
	if !ok || t.Type == tar.TypeDir {
		return MergedEntry{}, fmt.Errorf("hardlink %q: target %q: %w", e.Name, e.Linkname, fs.ErrNotExist)
	}
	return below.Resolve(t)
}

// Nlink is the number of visible paths that share e's data (hardlinks);
// 1 for anything not hardlinked.
func (m *Merged) Nlink(e MergedEntry) int {
	t, err := m.Resolve(e)
	if err != nil || t.Type != tar.TypeReg {
		return 1
	}
	m.linksOnce.Do(m.countLinks)
	if n := m.links[mergedLinkKey{t.Layer, t.Name}]; n > 0 {
		return n
	}
	return 1
}

// countLinks counts, per data entry, the visible paths resolving to it.
func (m *Merged) countLinks() {
	m.links = map[mergedLinkKey]int{}
	for i, x := range m.layers {
		for _, e := range x.Entries() {
			if e.Type != tar.TypeLink {
				continue
			}
			v, ok := m.Lookup(e.Name)
			if !ok || v.Entry != e {
				continue
			}
			if t, err := m.Resolve(MergedEntry{Entry: e, Layer: i}); err == nil {
				m.links[mergedLinkKey{t.Layer, t.Name}]++
			}
		}
	}
	for k := range m.links {
		if v, ok := m.Lookup(k.target); ok && v.Layer == k.layer && v.Type == tar.TypeReg {
			m.links[k]++ // the target's own path
		}
	}
}

// linkGroups maps each hardlink target of x to every path sharing its data
// (the target and its links); files without links are left out.
func linkGroups(x *Index) map[string][]string {
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

// LinkCounts is, for one layer's own tree, the number of paths sharing
// each hardlink target's data (target name → count); absent means 1.
func LinkCounts(x *Index) map[string]int {
	counts := map[string]int{}
	for t, names := range linkGroups(x) {
		counts[t] = len(names)
	}
	return counts
}
