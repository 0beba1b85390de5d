package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/regfs/regfs/layerindex"
)

// memBlob is a blob in memory, for layerindex.
type memBlob []byte

func (b memBlob) Size() int64 { return int64(len(b)) }

func (b memBlob) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// indexOf indexes an uncompressed tar held in memory.
func indexOf(t *testing.T, key string, tarData []byte) *layerindex.Index {
	t.Helper()
	m, err := layerindex.NewManager(layerindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x, err := m.Layer(key, layerindex.UncachedBlob(memBlob(tarData)), layerindex.LayerOptions{}).Index(context.Background())
	if err != nil {
		t.Fatalf("index %s: %v", key, err)
	}
	return x
}

// layerOf builds an index from "type:name[:linkname]" specs, in tar order:
// f file, d dir, l symlink, h hardlink.
func layerOf(t *testing.T, specs ...string) *layerindex.Index {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, s := range specs {
		parts := strings.SplitN(s, ":", 3)
		h := &tar.Header{Name: parts[1], Mode: 0o644, Size: int64(i)}
		switch parts[0] {
		case "f":
			h.Typeflag = tar.TypeReg
		case "d":
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case "l":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, parts[2], 0
		case "h":
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, parts[2], 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(make([]byte, h.Size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return indexOf(t, strings.Join(specs, ","), buf.Bytes())
}

// tree lists the merged tree as "path@layer" lines, depth first.
func tree(m *Merged) string {
	var out []string
	var walk func(dir string)
	walk = func(dir string) {
		for _, c := range m.Children(dir) {
			mark := ""
			if c.Type == tar.TypeDir {
				mark = "/"
			}
			out = append(out, fmt.Sprintf("%s%s@%d", c.Name, mark, c.Layer))
			if c.Type == tar.TypeDir {
				walk(c.Name)
			}
		}
	}
	walk("")
	return strings.Join(out, " ")
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]string
		want   string
	}{
		{"later file wins", [][]string{{"f:a", "f:b"}, {"f:a"}}, "a@1 b@0"},
		{"directories merge", [][]string{{"d:etc", "f:etc/a"}, {"d:etc", "f:etc/b"}}, "etc/@1 etc/a@0 etc/b@1"},
		{"whiteout of a file", [][]string{{"f:a", "f:b"}, {"f:.wh.a"}}, "b@0"},
		{"whiteout of a dir hides its subtree", [][]string{{"d:d", "f:d/x", "f:y"}, {"f:.wh.d"}}, "y@0"},
		{"whiteout in a subdir", [][]string{{"d:d", "f:d/x", "f:d/y"}, {"d:d", "f:d/.wh.x"}}, "d/@1 d/y@0"},
		{"whiteout of a missing file", [][]string{{"f:a"}, {"f:.wh.nothing"}}, "a@0"},
		{"whiteout acts only below", [][]string{{"f:a"}, {"f:.wh.a", "f:a"}}, "a@1"},
		{"opaque dir", [][]string{{"d:d", "f:d/x", "d:d/sub", "f:d/sub/y"}, {"d:d", "f:d/.wh..wh..opq", "f:d/z"}}, "d/@1 d/z@1"},
		{"opaque keeps its own layer", [][]string{{"d:d", "f:d/x"}, {"f:d/.wh..wh..opq", "f:d/new"}, {"f:d/top"}}, "d/@0 d/new@1 d/top@2"},
		{"file replaces dir", [][]string{{"d:d", "f:d/x"}, {"f:d"}}, "d@1"},
		{"dir replaces file", [][]string{{"f:d"}, {"d:d", "f:d/x"}}, "d/@1 d/x@1"},
		{"file, dir, file again", [][]string{{"f:d"}, {"d:d", "f:d/x"}, {"f:d"}}, "d@2"},
		{"implied dir keeps the lower metadata", [][]string{{"d:etc", "f:etc/a"}, {"f:etc/b"}}, "etc/@0 etc/a@0 etc/b@1"},
		{"implied dir over a file", [][]string{{"f:etc"}, {"f:etc/b"}}, "etc/@1 etc/b@1"},
		{"whiteouts never shown", [][]string{{"f:.wh.x", "d:d", "f:d/.wh..wh..opq"}}, "d/@0"},
		{"symlinks and hardlinks", [][]string{{"f:a", "h:b:a", "l:c:a"}}, "a@0 b@0 c@0"},
	}
	for _, tc := range tests {
		var xs []*layerindex.Index
		for _, l := range tc.layers {
			xs = append(xs, layerOf(t, l...))
		}
		if got := tree(Merge(xs)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestMergeLookup(t *testing.T) {
	m := Merge([]*layerindex.Index{
		layerOf(t, "d:d", "f:d/x", "f:gone", "f:a"),
		layerOf(t, "f:.wh.gone", "f:d/.wh.x", "f:a"),
	})
	tests := []struct {
		name   string
		ok     bool
		layer  int
		typeof byte
	}{
		{"", true, 1, tar.TypeDir},
		{"a", true, 1, tar.TypeReg},
		{"d", true, 0, tar.TypeDir},
		{"d/x", false, 0, 0},
		{"gone", false, 0, 0},
		{".wh.gone", false, 0, 0},
		{"nosuch", false, 0, 0},
		{"a/b", false, 0, 0},
	}
	for _, tc := range tests {
		e, ok := m.Lookup(tc.name)
		if ok != tc.ok || (ok && (e.Layer != tc.layer || e.Type != tc.typeof)) {
			t.Errorf("Lookup(%q): got ok=%v layer %d type %q, want ok=%v layer %d type %q", tc.name, ok, e.Layer, e.Type, tc.ok, tc.layer, tc.typeof)
		}
	}
}

func TestMergeNlink(t *testing.T) {
	m := Merge([]*layerindex.Index{
		layerOf(t, "f:a", "h:b:a", "h:c:a", "f:solo"),
		layerOf(t, "f:.wh.c"),
	})
	for _, tc := range []struct {
		name string
		want int
	}{{"a", 2}, {"b", 2}, {"solo", 1}} {
		e, _ := m.Lookup(tc.name)
		if got := m.Nlink(e); got != tc.want {
			t.Errorf("Nlink(%s): got %d, want %d", tc.name, got, tc.want)
		}
	}
	cross := Merge([]*layerindex.Index{layerOf(t, "f:a"), layerOf(t, "h:b:a")})
	for _, name := range []string{"a", "b"} {
		e, _ := cross.Lookup(name)
		r, err := cross.Resolve(e)
		if err != nil || r.Layer != 0 || r.Name != "a" || cross.Nlink(e) != 2 {
			t.Errorf("link across layers, %s: got %v layer %d nlink %d (%v), want a in layer 0, nlink 2", name, r.Entry, r.Layer, cross.Nlink(e), err)
		}
	}
	if got := LinkCounts(m.Index(0))["a"]; got != 3 {
		t.Errorf("LinkCounts of layer 0 for a: got %d, want 3", got)
	}
}
