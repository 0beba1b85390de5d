package fs

import (
	"bytes"
	"context"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// layered pushes an image whose layers exercise every entry kind and the
// whiteout rules.
func layered(h *harness) testImage {
	return h.c.addImage(h.t, "test/layered", "v1", amd64,
		[]testFile{
			{name: "etc/", typ: '5'},
			{name: "etc/passwd", body: "root:x:0:0\n"},
			{name: "etc/gone", body: "deleted above\n"},
			{name: "bin/", typ: '5'},
			{name: "bin/su", body: "#!su\n", mode: 0o4755},
			{name: "bin/sulink", typ: '1', link: "bin/su"},
			{name: "bin/sh", typ: '2', link: "/bin/busybox"},
			{name: "dev/", typ: '5'},
			{name: "dev/null", typ: '3', mode: 0o666, major: 1},
			{name: "opaque/", typ: '5'},
			{name: "opaque/old", body: "old"},
			{name: "tmp/", typ: '5', mode: 0o1777},
		},
		[]testFile{
			{name: "etc/.wh.gone", typ: '0'},
			{name: "etc/passwd", body: "root:x:0:0\nuser:x:1000:100\n", xattrs: map[string]string{"user.note": "hello"}},
			{name: "opaque/", typ: '5'},
			{name: "opaque/.wh..wh..opq"},
			{name: "opaque/new", body: "new"},
		})
}

func TestRootfs(t *testing.T) {
	h := newHarness(t, nil)
	layered(h)
	r := "/test/layered:v1/rootfs"
	for _, tc := range []struct {
		path string
		want []string
	}{
		{r, []string{"bin", "dev", "etc", "opaque", "tmp"}},
		{r + "/etc", []string{"passwd"}},
		{r + "/opaque", []string{"new"}},
		{r + "/bin", []string{"sh", "su", "sulink"}},
	} {
		if got := h.readdir(tc.path); !sameStrings(got, tc.want) {
			t.Errorf("readdir %s: got %v, want %v", tc.path, got, tc.want)
		}
	}
	if got := string(h.readFile(r + "/etc/passwd")); got != "root:x:0:0\nuser:x:1000:100\n" {
		t.Errorf("rootfs/etc/passwd: got %q, want the upper layer's", got)
	}
	for _, p := range []string{r + "/etc/gone", r + "/opaque/old", r + "/etc/.wh.gone"} {
		if _, _, errno := h.walk(p); errno != syscall.ENOENT {
			t.Errorf("lookup %s: got %v, want ENOENT", p, errno)
		}
	}
	for _, tc := range []struct {
		path  string
		mode  uint32
		size  uint64
		nlink uint32
		rdev  uint32
	}{
		{r + "/bin/su", syscall.S_IFREG | 0o4755, 5, 2, 0},
		{r + "/bin/sulink", syscall.S_IFREG | 0o4755, 5, 2, 0},
		{r + "/bin/sh", syscall.S_IFLNK | 0o644, uint64(len("/bin/busybox")), 1, 0},
		{r + "/dev/null", syscall.S_IFCHR | 0o666, 0, 1, 1<<8 | 3},
		{r + "/tmp", syscall.S_IFDIR | 0o1777, 0, 1, 0},
		{r + "/etc/passwd", syscall.S_IFREG | 0o644, 27, 1, 0},
	} {
		a := h.attr(tc.path)
		if a.Mode != tc.mode || a.Size != tc.size || a.Nlink != tc.nlink || a.Rdev != tc.rdev || a.Uid != 1000 || a.Gid != 100 {
			t.Errorf("%s: got mode %o size %d nlink %d rdev %#x uid %d gid %d, want %o %d %d %#x 1000 100",
				tc.path, a.Mode, a.Size, a.Nlink, a.Rdev, a.Uid, a.Gid, tc.mode, tc.size, tc.nlink, tc.rdev)
		}
	}
	su, _ := h.mustWalk(r + "/bin/su")
	link, _ := h.mustWalk(r + "/bin/sulink")
	if su.StableAttr().Ino != link.StableAttr().Ino {
		t.Errorf("hardlink inodes: got %d and %d, want one", su.StableAttr().Ino, link.StableAttr().Ino)
	}
	sh, _ := h.mustWalk(r + "/bin/sh")
	if target, errno := sh.Operations().(gofs.NodeReadlinker).Readlink(context.Background()); errno != 0 || string(target) != "/bin/busybox" {
		t.Errorf("readlink bin/sh: got %q %v, want /bin/busybox", target, errno)
	}
	pw, _ := h.mustWalk(r + "/etc/passwd")
	x := pw.Operations().(gofs.NodeGetxattrer)
	buf := make([]byte, 64)
	if n, errno := x.Getxattr(context.Background(), "user.note", buf); errno != 0 || string(buf[:n]) != "hello" {
		t.Errorf("getxattr user.note: got %q %v, want hello", buf[:n], errno)
	}
	if n, errno := x.Getxattr(context.Background(), "user.note", buf[:2]); errno != syscall.ERANGE || n != 5 {
		t.Errorf("getxattr into a short buffer: got %d %v, want 5 ERANGE", n, errno)
	}
	if _, errno := x.Getxattr(context.Background(), "user.none", buf); errno != syscall.ENODATA {
		t.Errorf("getxattr of a missing name: got %v, want ENODATA", errno)
	}
	if n, errno := pw.Operations().(gofs.NodeListxattrer).Listxattr(context.Background(), buf); errno != 0 || !bytes.Equal(buf[:n], []byte("user.note\x00")) {
		t.Errorf("listxattr: got %q %v", buf[:n], errno)
	}
}

func TestLayerFS(t *testing.T) {
	h := newHarness(t, nil)
	img := layered(h).img
	upper := "/test/layered:v1/layers/" + img.Layers[1].ID + "/fs"
	for _, tc := range []struct {
		path string
		want []string
	}{
		{upper, []string{"etc", "opaque"}},
		{upper + "/etc", []string{".wh.gone", "passwd"}},
		{upper + "/opaque", []string{".wh..wh..opq", "new"}},
	} {
		if got := h.readdir(tc.path); !sameStrings(got, tc.want) {
			t.Errorf("readdir %s: got %v, want %v (whiteouts shown as they are)", tc.path, got, tc.want)
		}
	}
	lower := "/test/layered:v1/layers/" + img.Layers[0].ID + "/fs"
	if got := string(h.readFile(lower + "/etc/gone")); got != "deleted above\n" {
		t.Errorf("lower layer's etc/gone: got %q", got)
	}
	if a := h.attr(lower + "/bin/su"); a.Nlink != 2 {
		t.Errorf("lower layer's bin/su nlink: got %d, want 2", a.Nlink)
	}
	if a := h.attr(lower); a.Mode != fuse.S_IFDIR|0o555 {
		t.Errorf("fs/ root: got mode %o, want %o", a.Mode, fuse.S_IFDIR|0o555)
	}
}

// The root of rootfs/ (and an implied parent) has no tar entry behind it:
// `ls -l` asks it for xattrs, which must answer, not panic.
func TestUndescribedDirAttrsAndXattrs(t *testing.T) {
	b := &entryBase{}
	if _, errno := b.Getxattr(context.Background(), "security.selinux", make([]byte, 64)); errno != syscall.ENODATA {
		t.Errorf("Getxattr: got errno %v, want ENODATA", errno)
	}
	if n, errno := b.Listxattr(context.Background(), make([]byte, 64)); errno != 0 || n != 0 {
		t.Errorf("Listxattr: got %d, %v; want 0, OK", n, errno)
	}
	var a fuse.Attr
	if err := b.fill(context.Background(), &a); err != nil {
		t.Fatalf("fill: %v", err)
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR || a.Mode&0o777 != 0o555 {
		t.Errorf("mode: got %o, want a 0555 directory", a.Mode)
	}
}
