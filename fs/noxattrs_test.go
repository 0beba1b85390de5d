package fs

import (
	"context"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// TestMadeUpNodesHaveNoXattrs: every kind of node regfs makes up answers
// Getxattr with ENOTSUP (so `ls -l` stops asking each entry) and lists no
// attributes; a tar entry still answers ENODATA for a name it lacks.
func TestMadeUpNodesHaveNoXattrs(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Status = &Status{Version: "v9"} })
	layer := "/test/small:latest/layers/" + h.small.img.Layers[0].ID
	tests := []struct {
		path string
		want syscall.Errno
	}{
		{"/", syscall.ENOTSUP},
		{"/test", syscall.ENOTSUP},
		{"/test/small", syscall.ENOTSUP},
		{"/test/small/_tags", syscall.ENOTSUP},
		{"/test/small/_tags/latest", syscall.ENOTSUP},
		{"/test/small/_digests", syscall.ENOTSUP},
		{"/test/small:latest", syscall.ENOTSUP},
		{"/test/small@" + h.small.img.ManifestDigest.String(), syscall.ENOTSUP},
		{"/test/small:latest/manifest.json", syscall.ENOTSUP},
		{"/test/small:latest/layers", syscall.ENOTSUP},
		{layer, syscall.ENOTSUP},
		{layer + "/blob", syscall.ENOTSUP},
		{layer + "/layer.tar", syscall.ENOTSUP},
		{"/test/multi:latest/platforms", syscall.ENOTSUP},
		{"/.regfs", syscall.ENOTSUP},
		{"/.regfs/version", syscall.ENOTSUP},
		{"/test/small:latest/rootfs", syscall.ENODATA}, // a view: tar entries may carry xattrs
	}
	for _, tc := range tests {
		in, _ := h.mustWalk(tc.path)
		x, ok := in.Operations().(gofs.NodeGetxattrer)
		if !ok {
			t.Errorf("%s: %T has no Getxattr (go-fuse would answer ENODATA)", tc.path, in.Operations())
			continue
		}
		if _, errno := x.Getxattr(context.Background(), "security.selinux", make([]byte, 64)); errno != tc.want {
			t.Errorf("%s: Getxattr security.selinux: got %v, want %v", tc.path, errno, tc.want)
		}
		if n, errno := in.Operations().(gofs.NodeListxattrer).Listxattr(context.Background(), make([]byte, 64)); n != 0 || errno != 0 {
			t.Errorf("%s: Listxattr: got %d bytes, %v; want none, OK", tc.path, n, errno)
		}
	}
}
