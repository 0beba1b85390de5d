package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	iofs "io/fs"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry/registrytest"
)

// smallRootfs is test/small's merged tree, from uncompressed tars in memory.
func smallRootfs(t *testing.T) *Merged {
	t.Helper()
	var xs []*layerindex.Index
	for i, entries := range registrytest.SmallLayerEntries() {
		var buf bytes.Buffer
		if err := registrytest.WriteTar(&buf, entries); err != nil {
			t.Fatal(err)
		}
		xs = append(xs, indexOf(t, fmt.Sprint("layer", i), buf.Bytes()))
	}
	return Merge(xs)
}

func TestLookupFollow(t *testing.T) {
	m := smallRootfs(t)
	for _, tc := range []struct {
		path    string
		want    string // entry name found
		wantErr error
	}{
		{"/", "", nil},
		{".", "", nil},
		{"/etc/passwd", "etc/passwd", nil},
		{"etc//./passwd", "etc/passwd", nil},
		{"/usr/bin/tool", "bin/tool", nil},                 // absolute symlink
		{"/usr/lib/libfoo.so", "usr/lib/libfoo.so.1", nil}, // relative symlink
		{"/usr/lib/../../etc/hostname", "etc/hostname", nil},
		{"/../../etc/hostname", "etc/hostname", nil}, // ".." stops at the root
		{"/usr/lib/dangling", "", iofs.ErrNotExist},
		{"/etc/old.conf", "", iofs.ErrNotExist}, // whited out by layer 2
		{"/etc/hostname/x", "", syscall.ENOTDIR},
		{"/nothing", "", iofs.ErrNotExist},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e, err := m.LookupFollow(tc.path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("LookupFollow(%q): got %v, want %v", tc.path, err, tc.wantErr)
				}
				return
			}
			if err != nil || e.Name != tc.want {
				t.Fatalf("LookupFollow(%q): got %q, %v; want %q", tc.path, e.Name, err, tc.want)
			}
		})
	}
}

func TestLookupFollowLoop(t *testing.T) {
	var buf bytes.Buffer
	if err := registrytest.WriteTar(&buf, []registrytest.Entry{
		registrytest.Symlink("a", "b"), registrytest.Symlink("b", "/a"),
	}); err != nil {
		t.Fatal(err)
	}
	x := indexOf(t, "loop", buf.Bytes())
	if _, err := Merge([]*layerindex.Index{x}).LookupFollow("/a"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("LookupFollow of a symlink loop: got %v, want ELOOP", err)
	}
}

func TestDataFiles(t *testing.T) {
	m := smallRootfs(t)
	names := func(fs []Entry) []string {
		var out []string
		for _, f := range fs {
			out = append(out, fmt.Sprintf("%d:%s", f.Layer, f.Name))
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		paths []string
		want  []string // layer:name of the data entries
	}{
		{[]string{"/etc/hostname"}, []string{"1:etc/hostname"}},
		// The hardlink and its target are one file; the empty file is skipped.
		{[]string{"/bin/tool-hard", "/bin/sutool", "/empty"}, []string{"0:bin/sutool"}},
		// A directory: only what shows through (the opaque dir hides layer 0's).
		{[]string{"/var/cache"}, []string{"1:var/cache/new"}},
		// A symlink inside a directory is not followed; a hardlink is resolved.
		{[]string{"app"}, []string{"1:app/main.sh", "2:app/config.json"}},
		{[]string{"/usr/bin"}, nil},
	} {
		t.Run(strings.Join(tc.paths, ","), func(t *testing.T) {
			files, size, err := m.DataFiles(tc.paths)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(files); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("DataFiles(%v): got %v, want %v", tc.paths, got, tc.want)
			}
			var want int64
			for _, f := range files {
				want += f.Size
			}
			if size != want {
				t.Errorf("DataFiles(%v) size: got %d, want %d", tc.paths, size, want)
			}
		})
	}
	if _, _, err := m.DataFiles([]string{"/etc", "/nothing"}); err == nil || !strings.Contains(err.Error(), `"/nothing"`) {
		t.Errorf("DataFiles with a missing path: got %v, want an error naming it", err)
	}
}
