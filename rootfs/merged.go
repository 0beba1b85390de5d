package rootfs

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/regfs/regfs/layerindex"
)

// Merged is the merged tree of some layers' indexes. Safe for concurrent use.
//
// A lookup at depth k costs O(k) per layer, not O(k²): which layers a
// directory hides from is remembered per directory (hidden), so a path's
// answer builds on its parent's instead of walking every ancestor again.
type Merged struct {
	layers []*layerindex.Index // base first

	linksOnce sync.Once
	links     map[mergedLinkKey]int

	mu     sync.Mutex
	hidden map[string]int // directory → floorUnder(directory), for directories some layer has
	below  []*Merged      // below[i]: the merge of layers [0, i), made on first use

	lookups atomic.Int64 // index lookups made, for tests that bound the work
}

type mergedLinkKey struct {
	layer  int
	target string
}

// Entry is a visible entry and the layer (0 = base) it comes from.
type Entry struct {
	*layerindex.Entry
	Layer int
}

// Merge returns the merged view of layers, base first. It does no work
// until asked.
func Merge(layers []*layerindex.Index) *Merged {
	return &Merged{layers: layers}
}

// Layers is the number of layers merged.
func (m *Merged) Layers() int { return len(m.layers) }

// Index returns layer i's index.
func (m *Merged) Index(i int) *layerindex.Index { return m.layers[i] }

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

// find looks name up in layer i's own index.
func (m *Merged) find(i int, name string) (*layerindex.Entry, bool) {
	m.lookups.Add(1)
	return m.layers[i].Lookup(name)
}

// floorAt is the highest layer that hides, from the layers below it,
// whatever they have at name (a non-empty path): a whiteout of name or of
// an ancestor, an opaque ancestor, or a non-directory ancestor in that
// layer. -1 if none does: every layer shows through.
func (m *Merged) floorAt(name string) int {
	dir, base := parentName(name), name[strings.LastIndexByte(name, '/')+1:]
	f := m.floorUnder(dir)
	wh := joinName(dir, WhiteoutPrefix+base)
	for i := len(m.layers) - 1; i > f; i-- {
		if _, ok := m.find(i, wh); ok {
			return i
		}
	}
	return f
}

// floorUnder is floorAt for what lies strictly under dir ("" is the root):
// also an opaque marker in dir, or dir being a non-directory, hides. It is
// remembered for directories a layer has, so a walk down a deep tree does
// each ancestor once.
func (m *Merged) floorUnder(dir string) int {
	m.mu.Lock()
	f, ok := m.hidden[dir]
	m.mu.Unlock()
	if ok {
		return f
	}
	f = -1
	if dir != "" {
		f = m.floorAt(dir)
	}
	exists := dir == ""
	opq := joinName(dir, OpaqueWhiteout)
	for i := len(m.layers) - 1; i > f; i-- {
		if _, ok := m.find(i, opq); ok {
			f = i
			break
		}
		if dir == "" {
			continue
		}
		if e, ok := m.find(i, dir); ok {
			exists = true
			if e.Type != tar.TypeDir {
				f = i
				break
			}
		}
	}
	if !exists {
		for i := f; i >= 0 && !exists; i-- {
			_, exists = m.find(i, dir)
		}
	}
	if exists { // only paths some layer has: bounded by the indexes' size
		m.mu.Lock()
		if m.hidden == nil {
			m.hidden = map[string]int{}
		}
		m.hidden[dir] = f
		m.mu.Unlock()
	}
	return f
}

// Lookup returns the visible entry at name ("" is the root).
func (m *Merged) Lookup(name string) (Entry, bool) {
	if len(m.layers) == 0 {
		return Entry{}, false
	}
	if name == "" {
		// The top-most root entry the tars list; a made-up one otherwise.
		for i := len(m.layers) - 1; i >= 0; i-- {
			if r := m.layers[i].Root(); !r.Implicit {
				return Entry{Entry: r, Layer: i}, true
			}
		}
		return Entry{Entry: m.layers[len(m.layers)-1].Root(), Layer: len(m.layers) - 1}, true
	}
	if IsWhiteout(name) {
		return Entry{}, false
	}
	// A directory a layer only implies takes the metadata of a directory
	// a lower layer lists at the same path, if one shows through.
	var implied *Entry
	floor := m.floorAt(name)
	for i := len(m.layers) - 1; i >= 0 && i >= floor; i-- {
		if e, ok := m.find(i, name); ok {
			switch {
			case e.Type == tar.TypeDir && e.Implicit:
				if implied == nil {
					implied = &Entry{Entry: e, Layer: i}
				}
			case e.Type == tar.TypeDir:
				return Entry{Entry: e, Layer: i}, true
			case implied != nil:
				return *implied, true // the upper directory replaced this non-directory
			default:
				return Entry{Entry: e, Layer: i}, true
			}
		}
	}
	if implied != nil {
		return *implied, true
	}
	return Entry{}, false
}

// Children returns the visible entries directly in directory dir, sorted
// by name; none if dir is not a visible directory.
func (m *Merged) Children(dir string) []Entry {
	if d, ok := m.Lookup(dir); !ok || d.Type != tar.TypeDir {
		return nil
	}
	names := map[string]bool{}
	floor := m.floorUnder(dir)
	for i := len(m.layers) - 1; i >= 0 && i >= floor; i-- {
		x := m.layers[i]
		if dir != "" {
			if e, ok := m.find(i, dir); ok && e.Type != tar.TypeDir {
				break
			}
		}
		for _, c := range x.Children(dir) {
			if !IsWhiteout(c.Name) {
				names[path.Base(c.Name)] = true
			}
		}
	}
	out := make([]Entry, 0, len(names))
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
func (m *Merged) Resolve(e Entry) (Entry, error) {
	if e.Type != tar.TypeLink {
		return e, nil
	}
	if t, err := m.layers[e.Layer].Resolve(e.Entry); err == nil {
		return Entry{Entry: t, Layer: e.Layer}, nil
	}
	below := m.mergedBelow(e.Layer)
	t, ok := below.Lookup(e.Linkname)
	if !ok || t.Type == tar.TypeDir {
		return Entry{}, fmt.Errorf("hardlink %q: target %q: %w", e.Name, e.Linkname, fs.ErrNotExist)
	}
	return below.Resolve(t)
}

// mergedBelow is the merge of the layers below layer i, made once.
func (m *Merged) mergedBelow(i int) *Merged {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.below == nil {
		m.below = make([]*Merged, len(m.layers))
	}
	if m.below[i] == nil {
		m.below[i] = Merge(m.layers[:i])
	}
	return m.below[i]
}

// Nlink is the number of visible paths that share e's data (hardlinks);
// 1 for anything not hardlinked.
func (m *Merged) Nlink(e Entry) int {
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
			if t, err := m.Resolve(Entry{Entry: e, Layer: i}); err == nil {
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

// maxSymlinkHops is where following symlinks gives up, as Linux does.
const maxSymlinkHops = 40

// LookupFollow finds name (an absolute or relative path in the rootfs),
// resolving symlinks on the way (an absolute target from the root, a
// relative one from the link's directory) and ".." as the kernel would
// inside a chroot. Errors wrap fs.ErrNotExist, syscall.ENOTDIR or
// syscall.ELOOP.
func (m *Merged) LookupFollow(name string) (Entry, error) {
	rest := splitPath(name)
	dir := "" // resolved so far; "" is the root
	hops := 0
	for len(rest) > 0 {
		el := rest[0]
		rest = rest[1:]
		if el == ".." {
			dir = parentName(dir)
			continue
		}
		cur := joinName(dir, el)
		e, ok := m.Lookup(cur)
		if !ok {
			return Entry{}, fmt.Errorf("/%s: %w", cur, fs.ErrNotExist)
		}
		switch {
		case e.Type == tar.TypeSymlink:
			if hops++; hops > maxSymlinkHops {
				return Entry{}, fmt.Errorf("/%s: %w", cur, syscall.ELOOP)
			}
			if strings.HasPrefix(e.Linkname, "/") {
				dir = ""
			}
			rest = append(splitPath(e.Linkname), rest...)
		case len(rest) > 0 && e.Type != tar.TypeDir:
			return Entry{}, fmt.Errorf("/%s: %w", cur, syscall.ENOTDIR)
		default:
			dir = cur
		}
	}
	e, ok := m.Lookup(dir)
	if !ok {
		return Entry{}, fmt.Errorf("/%s: %w", dir, fs.ErrNotExist)
	}
	return e, nil
}

// splitPath splits a path into its elements, without "" and ".".
func splitPath(p string) []string {
	var out []string
	for _, el := range strings.Split(p, "/") {
		if el != "" && el != "." {
			out = append(out, el)
		}
	}
	return out
}

// DataFiles lists the non-empty regular files at or under paths (each
// found with LookupFollow; symlinks inside a directory are not followed),
// hardlinks resolved to the entry holding the data and each such entry
// once, and their total size.
func (m *Merged) DataFiles(paths []string) ([]Entry, int64, error) {
	seen := map[mergedLinkKey]bool{}
	var files []Entry
	var size int64
	var walk func(e Entry) error
	walk = func(e Entry) error {
		switch e.Type {
		case tar.TypeDir:
			for _, c := range m.Children(e.Name) {
				if err := walk(c); err != nil {
					return err
				}
			}
		case tar.TypeReg, tar.TypeLink:
			t, err := m.Resolve(e)
			if err != nil {
				return err
			}
			k := mergedLinkKey{t.Layer, t.Name}
			if t.Type != tar.TypeReg || t.Size == 0 || seen[k] {
				return nil
			}
			seen[k] = true
			files = append(files, t)
			size += t.Size
		}
		return nil
	}
	for _, p := range paths {
		e, err := m.LookupFollow(p)
		if err != nil {
			return nil, 0, fmt.Errorf("path %q in the image: %w", p, err)
		}
		if err := walk(e); err != nil {
			return nil, 0, fmt.Errorf("path %q in the image: %w", p, err)
		}
	}
	return files, size, nil
}
