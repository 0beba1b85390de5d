package layerindex

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Index is a layer's tar entries, after the tar's own replacement rules:
// a later entry for a path replaces an earlier one (as docker extracts);
// a non-directory replacing a directory removes what was under it; a
// directory replacing a directory keeps its children. Parent directories
// the tar never lists are made up (Entry.Implicit). Whiteout entries
// (.wh.*) are kept as they are: merging layers is the caller's job.
//
// An Index is immutable once built and safe for concurrent use; callers
// must not modify the Entries it returns.
type Index struct {
	root     *Entry              // the tar's own "./" entry, if any
	entries  []*Entry            // one per path, in the order of each path's last write
	byName   map[string]*Entry   // Name → entry
	children map[string][]*Entry // directory Name ("" for the root) → children sorted by Name
}

// Lookup returns the entry for a cleaned relative path ("" is the root).
func (x *Index) Lookup(name string) (*Entry, bool) {
	if name == "" {
		return x.Root(), true
	}
	e, ok := x.byName[name]
	return e, ok
}

// Root returns the root directory's entry: the tar's "./" entry if it has
// one, else an implicit 0755 directory.
func (x *Index) Root() *Entry {
	if x.root != nil {
		return x.root
	}
	return &Entry{Type: tar.TypeDir, Mode: fs.ModeDir | 0o755, Offset: -1, Implicit: true}
}

// Entries returns every entry, one per path, in tar order.
func (x *Index) Entries() []*Entry { return x.entries }

// Children returns the entries directly inside directory dir ("" for the
// root), sorted by name.
func (x *Index) Children(dir string) []*Entry { return x.children[dir] }

// Len is the number of entries.
func (x *Index) Len() int { return len(x.entries) }

// Resolve follows hardlinks (a hardlink's own entry has no data) to the
// entry that holds the data. It fails for a link to a missing path.
func (x *Index) Resolve(e *Entry) (*Entry, error) {
	for i := 0; e.Type == tar.TypeLink; i++ {
		t, ok := x.byName[e.Linkname]
		if !ok || i > 64 || t == e {
			return nil, fmt.Errorf("hardlink %q: target %q: %w", e.Name, e.Linkname, fs.ErrNotExist)
		}
		e = t
	}
	return e, nil
}

// cleanName maps a tar path into the layer: "./a//b/" → "a/b", "/etc" →
// "etc", "../../x" → "x" (".." can't climb above the root), "." → "".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// indexBuilder applies tar headers in order.
type indexBuilder struct {
	x          *Index
	pos        map[string]int      // Name → its slot in x.entries (slots of replaced entries are nil)
	kids       map[string][]string // directory → names ever added under it
	maxEntries int
	charge     func(int64) error // takes an entry's memory from the Manager's budget; nil: none
	// links binds a hardlink to the entry its target named when the link
	// was read: an extraction links to what is on disk then, so a later
	// entry replacing the target leaves the link with the original data.
	links map[*Entry]*Entry
	// moved lists the replaced entries whose data a hardlink took over
	// (finish): the eStargz index moves their chunks along.
	moved []movedData
}

// movedData is a replaced entry whose data now lives at a hardlink's path.
type movedData struct{ from, to *Entry }

func newIndexBuilder(maxEntries int) *indexBuilder {
	return &indexBuilder{
		x:          &Index{byName: map[string]*Entry{}},
		pos:        map[string]int{},
		kids:       map[string][]string{},
		maxEntries: maxEntries,
		links:      map[*Entry]*Entry{},
	}
}

// maxLinkHops bounds following a chain of hardlinks.
const maxLinkHops = 64

// dataEntry is the entry that holds the data of the path name now, after
// hardlinks (bound ones to what they were bound to); nil if there is none
// or it is a directory.
func (b *indexBuilder) dataEntry(name string) *Entry {
	t, ok := b.x.byName[name]
	for i := 0; ok && t.Type == tar.TypeLink; i++ {
		if bt := b.links[t]; bt != nil {
			return bt
		}
		if i > maxLinkHops {
			return nil
		}
		t, ok = b.x.byName[t.Linkname]
	}
	if !ok || t.Type == tar.TypeDir {
		return nil
	}
	return t
}

var errNotAddressable = errors.New("entry data is not stored contiguously (sparse file)")

// add records the entry for hdr, whose data starts at offset in the tar
// stream; the entry is returned (nil for headers that are no file).
func (b *indexBuilder) add(hdr *tar.Header, offset int64) (*Entry, error) {
	e := entryOf(hdr, offset)
	if e == nil {
		return nil, nil
	}
	return e, b.addEntry(e)
}

// entryOf converts a tar header whose data starts at offset; nil for
// headers that are no file.
func entryOf(hdr *tar.Header, offset int64) *Entry {
	typ := hdr.Typeflag
	switch typ {
	case tar.TypeXGlobalHeader:
		return nil // archive-wide PAX records, not a file
	case tar.TypeRegA:
		typ = tar.TypeReg
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeGNUSparse:
	case tar.TypeCont:
		typ = tar.TypeReg // contiguous file: a regular file to every extractor
	default:
		return nil // vendor types (e.g. 'V' volume labels) are no files
	}
	name := cleanName(hdr.Name)
	fi := hdr.FileInfo()
	e := &Entry{
		Name:     name,
		Type:     typ,
		Mode:     fi.Mode(),
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		ModTime:  hdr.ModTime,
		Linkname: hdr.Linkname,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		Offset:   offset,
	}
	if typ == tar.TypeReg || typ == tar.TypeGNUSparse {
		e.Size = hdr.Size
	}
	if typ == tar.TypeLink {
		e.Linkname = cleanName(hdr.Linkname)
	}
	if typ == tar.TypeGNUSparse {
		e.Type, e.Offset = tar.TypeReg, -1
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x] = v
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			e.Offset = -1
		}
	}
	return e
}

// addEntry records e (with a cleaned Name) by the tar's replacement rules;
// the tar and eStargz TOC paths share it so both read a layer alike.
func (b *indexBuilder) addEntry(e *Entry) error {
	if e.Type == tar.TypeDir {
		e.Offset = -1
	}
	if e.Type == tar.TypeLink {
		if t := b.dataEntry(e.Linkname); t != nil {
			b.links[e] = t
		}
	}
	if e.Name == "" {
		if e.Type == tar.TypeDir {
			b.x.root = e
		}
		return nil // a non-directory can't replace the root
	}
	return b.put(e)
}

func (b *indexBuilder) put(e *Entry) error {
	if err := b.ensureParents(e.Name); err != nil {
		return err
	}
	if old, ok := b.x.byName[e.Name]; ok {
		if old.Type == tar.TypeDir && e.Type != tar.TypeDir {
			b.removeUnder(e.Name)
		}
		b.x.entries[b.pos[e.Name]] = nil
	} else {
		if len(b.x.byName) >= b.maxEntries {
			return fmt.Errorf("more than %d entries", b.maxEntries)
		}
		if b.charge != nil {
			if err := b.charge(entryCost(e)); err != nil {
				return err
			}
		}
		dir := path.Dir(e.Name)
		if dir == "." {
			dir = ""
		}
		b.kids[dir] = append(b.kids[dir], e.Name)
	}
	b.x.byName[e.Name] = e
	b.pos[e.Name] = len(b.x.entries)
	b.x.entries = append(b.x.entries, e)
	return nil
}

// ensureParents makes every ancestor of name a directory: missing ones are
// made up, non-directories in the way are replaced (the later entry wins).
func (b *indexBuilder) ensureParents(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if p, ok := b.x.byName[dir]; ok && p.Type == tar.TypeDir {
		return nil
	}
	return b.put(&Entry{Name: dir, Type: tar.TypeDir, Mode: fs.ModeDir | 0o755, Offset: -1, Implicit: true})
}

func (b *indexBuilder) removeUnder(dir string) {
	for _, k := range b.kids[dir] {
		if _, ok := b.x.byName[k]; !ok {
			continue
		}
		b.removeUnder(k)
		b.x.entries[b.pos[k]] = nil
		delete(b.x.byName, k)
		delete(b.pos, k)
	}
	delete(b.kids, dir)
}

// finish compacts the entry list, gives hardlinks whose target was
// replaced after them the original data, and builds the directory listings.
func (b *indexBuilder) finish() *Index {
	x := b.x
	live := x.entries[:0]
	for _, e := range x.entries {
		if e != nil {
			live = append(live, e)
		}
	}
	x.entries = live
	b.keepReplacedTargets()
	x.finishChildren()
	return x
}

// keepReplacedTargets turns the first live hardlink bound to a replaced
// (or removed) entry into that entry, at the link's path: it holds the
// original data now, as the extracted file would. Other links bound to the
// same entry link to it.
func (b *indexBuilder) keepReplacedTargets() {
	holders := map[*Entry]*Entry{} // replaced entry → the link holding its data
	for _, e := range b.x.entries {
		t := b.links[e]
		if t == nil || b.x.byName[t.Name] == t {
			continue
		}
		if h := holders[t]; h != nil {
			e.Linkname = h.Name
			continue
		}
		name := e.Name
		*e = *t
		e.Name = name
		if e.HeaderName == "" {
			e.HeaderName = t.Name
		}
		holders[t] = e
		b.moved = append(b.moved, movedData{from: t, to: e})
	}
}

// finishChildren builds byName and children from entries (also after loading).
func (x *Index) finishChildren() {
	if x.byName == nil {
		x.byName = make(map[string]*Entry, len(x.entries))
		for _, e := range x.entries {
			x.byName[e.Name] = e
		}
	}
	x.children = map[string][]*Entry{}
	for _, e := range x.entries {
		dir := path.Dir(e.Name)
		if dir == "." {
			dir = ""
		}
		x.children[dir] = append(x.children[dir], e)
	}
	for _, c := range x.children {
		sort.Slice(c, func(i, j int) bool { return c[i].Name < c[j].Name })
	}
}

// countingReader counts the bytes read, and keeps the first non-EOF error
// of its source so a decode failure is not mistaken for a bad tar.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && c.err == nil {
		c.err = err
	}
	return n, err
}

// readTarIndex reads tar headers from r, noting where each entry's headers
// and data start and hashing each regular file's content on the way (the
// stream is read whole anyway). It stops at the end-of-archive marker or
// the first error.
func readTarIndex(r *countingReader, b *indexBuilder) (*Index, error) {
	return walkTar(tar.NewReader(r), func() int64 { return r.n }, b, true)
}

// readTarIndexAt reads the tar headers of a seekable blob, skipping the
// data between them.
func readTarIndexAt(s *seekBlob, b *indexBuilder) (*Index, error) {
	return walkTar(tar.NewReader(s), func() int64 { return s.pos }, b, false)
}

// walkTar indexes the entries of tr; pos tells where the stream is (right
// after Next: where the entry's data starts). With hash, every entry's
// data is read through (a regular file's into its ContentSHA256), so the
// position before Next, rounded up to a block, is where the next entry's
// headers start.
func walkTar(tr *tar.Reader, pos func() int64, b *indexBuilder, hash bool) (*Index, error) {
	var fh *fileHasher
	if hash {
		fh = newFileHasher()
		defer fh.close()
	}
	for {
		headerOff := (pos() + blockSize - 1) / blockSize * blockSize
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if fh != nil {
				fh.close() // every ContentSHA256 set before finish copies entries
			}
			return b.finish(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		e, err := b.add(hdr, pos())
		if err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		if !hash {
			continue
		}
		if e != nil {
			e.HeaderOff = headerOff
		}
		if e != nil && e.Type == tar.TypeReg && e.Offset >= 0 {
			err = fh.hash(tr, e)
		} else {
			_, err = io.Copy(io.Discard, tr)
		}
		if err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
}

// blockSize is the tar block: headers and data start on its multiples.
const blockSize = 512
