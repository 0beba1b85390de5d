package mounttest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/regfs/regfs/registry/registrytest"
)

// flatEntry is one path of an independent flattening: what a plain tar
// extraction that honours whiteouts leaves.
type flatEntry struct {
	typ      byte
	mode     int64
	uid, gid int
	size     int64
	link     string // symlink target
	sum      [32]byte
	xattrs   map[string]string
	layer    int
}

// skipType marks a path whose content a one-layer view cannot know.
const skipType = 0xff

// flatten applies the layers' tars in order into a map, the simple way.
func flatten(t *testing.T, layers []*registrytest.Layer, only int) map[string]*flatEntry {
	t.Helper()
	tree := map[string]*flatEntry{}
	removeUnder := func(dir string, below int) {
		for p, e := range tree {
			if strings.HasPrefix(p, dir+"/") && e.layer < below {
				delete(tree, p)
			}
		}
	}
	for i, l := range layers {
		if only >= 0 && i != only {
			continue
		}
		raw, err := l.TarBytes()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
			if name == "" {
				continue
			}
			base, dir := path.Base(name), path.Dir(name)
			if only < 0 && base == ".wh..wh..opq" {
				removeUnder(dir, i)
				continue
			}
			if only < 0 && strings.HasPrefix(base, ".wh.") {
				victim := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				if e, ok := tree[victim]; ok && e.layer < i {
					delete(tree, victim)
				}
				removeUnder(victim, i)
				continue
			}
			for d := dir; d != "."; d = path.Dir(d) {
				if e, ok := tree[d]; !ok || e.typ != tar.TypeDir {
					tree[d] = &flatEntry{typ: tar.TypeDir, mode: 0o755, layer: i}
				}
			}
			e := &flatEntry{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, layer: i}
			for k, v := range h.PAXRecords {
				if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
					if e.xattrs == nil {
						e.xattrs = map[string]string{}
					}
					e.xattrs[x] = v
				}
			}
			switch h.Typeflag {
			case tar.TypeReg:
				data, _ := io.ReadAll(tr)
				e.size, e.sum = int64(len(data)), sha256.Sum256(data)
			case tar.TypeSymlink:
				e.link, e.size = h.Linkname, int64(len(h.Linkname))
			case tar.TypeLink:
				target := tree[strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")]
				if target == nil {
					// A link into a lower layer, seen in its layer alone:
					// what regfs shows for it is not compared.
					tree[name] = &flatEntry{typ: skipType}
					continue
				}
				cp := *target
				cp.layer = i
				e = &cp
			}
			if old, ok := tree[name]; ok && old.typ == tar.TypeDir && e.typ != tar.TypeDir {
				removeUnder(name, i+1)
			}
			tree[name] = e
		}
	}
	return tree
}

// describe is what the mount shows at root, in flatEntry's terms.
func describe(t *testing.T, root string) map[string]*flatEntry {
	t.Helper()
	tree := map[string]*flatEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		e := &flatEntry{mode: int64(st.Mode & 0o7777), uid: int(st.Uid), gid: int(st.Gid)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.typ = tar.TypeDir
		case syscall.S_IFLNK:
			e.typ, e.size = tar.TypeSymlink, st.Size
			e.link, err = os.Readlink(p)
		case syscall.S_IFREG:
			e.typ, e.size = tar.TypeReg, st.Size
			// A failed read shows as a zero sum, and fails the comparison.
			if data, rerr := os.ReadFile(p); rerr == nil {
				e.sum = sha256.Sum256(data)
			}
		case syscall.S_IFCHR:
			e.typ = tar.TypeChar
		case syscall.S_IFBLK:
			e.typ = tar.TypeBlock
		case syscall.S_IFIFO:
			e.typ = tar.TypeFifo
		}
		if err != nil {
			return err
		}
		if n, _ := syscall.Listxattr(p, nil); n > 0 && e.typ != tar.TypeSymlink {
			buf := make([]byte, n)
			n, _ = syscall.Listxattr(p, buf)
			for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
				vn, _ := syscall.Getxattr(p, name, nil)
				v := make([]byte, vn)
				vn, _ = syscall.Getxattr(p, name, v)
				if e.xattrs == nil {
					e.xattrs = map[string]string{}
				}
				e.xattrs[name] = string(v[:vn])
			}
		}
		tree[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return tree
}

func (e *flatEntry) String() string {
	if e == nil {
		return "(absent)"
	}
	return fmt.Sprintf("type %q mode %o uid %d gid %d size %d link %q sum %x xattrs %v", e.typ, e.mode, e.uid, e.gid, e.size, e.link, e.sum[:4], e.xattrs)
}

func compareTrees(t *testing.T, what string, got, want map[string]*flatEntry) {
	t.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	bad := 0
	for _, p := range paths {
		g, w := got[p], want[p]
		if w != nil && w.typ == skipType {
			continue
		}
		if w != nil && g != nil {
			if w.typ == tar.TypeLink || w.typ == tar.TypeDir && g.typ == tar.TypeDir {
				w.size, g.size = 0, 0
			}
			if fmt.Sprint(g) == fmt.Sprint(w) {
				continue
			}
		}
		if bad++; bad <= 10 {
			t.Errorf("%s %s: got %v, want %v", what, p, g, w)
		}
	}
}

func TestRootfsMatchesFlattening(t *testing.T) {
	mnt := mount(t, reg.Host, mountOpts{})
	for _, tc := range []struct {
		name string
		img  *registrytest.Image
	}{
		{"test/small:latest", fixtures.Small},
		{"test/small:docker", fixtures.SmallDocker},
		{"test/compress:zstd", fixtures.Zstd},
		{"test/compress:none", fixtures.Plain},
		{"test/compress:estargz", fixtures.EStargz},
		{"test/deep/nested/repo:v1", fixtures.Deep},
	} {
		t.Run(strings.NewReplacer("/", "_").Replace(tc.name), func(t *testing.T) {
			dir := filepath.Join(mnt, tc.name)
			compareTrees(t, "rootfs", describe(t, filepath.Join(dir, "rootfs")), flatten(t, tc.img.Layers, -1))
			ids := chainIDs(tc.img.DiffIDs)
			for i := range tc.img.Layers {
				compareTrees(t, "layer "+ids[i][:12], describe(t, filepath.Join(dir, "layers", ids[i], "fs")), flatten(t, tc.img.Layers, i))
			}
		})
	}
}
