package fs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The nodes regfs makes up belong to the user who mounted; tar entries
// keep the owner their header names, uid 0 included. go-fuse's Options.UID
// would replace every uid 0 with the mounting user's, so it stays unset.
func TestOwners(t *testing.T) {
	saved := mountOwner
	mountOwner = fuse.Owner{Uid: 4242, Gid: 4343}
	t.Cleanup(func() { mountOwner = saved })
	h := newHarness(t, func(o *Options) { o.Status = &Status{Version: "v"} })
	h.c.addImage(t, "test/owned", "latest", amd64, []testFile{
		{name: "etc/", typ: '5', rootOwned: true},
		{name: "etc/shadow", body: "root:*:1::::::\n", rootOwned: true},
		{name: "home/", typ: '5'},
		{name: "home/user", body: "u"},
	})

	if o := h.root.fuseOptions(MountConfig{}); o.UID != 0 || o.GID != 0 {
		t.Errorf("go-fuse options: UID %d GID %d, want 0 and 0 (no override of tar owners)", o.UID, o.GID)
	}
	tests := []struct {
		path string
		want fuse.Owner
	}{
		{"test", mountOwner},
		{"test/small:latest", mountOwner},
		{"test/small:latest/manifest.json", mountOwner},
		{"test/small:latest/rootfs", mountOwner},
		{"test/owned:latest/rootfs/etc/shadow", fuse.Owner{}}, // root's in the tar
		{"test/owned:latest/rootfs/etc", fuse.Owner{}},
		{"test/owned:latest/rootfs/home/user", fuse.Owner{Uid: 1000, Gid: 100}},
		{".regfs/version", mountOwner},
	}
	for _, tt := range tests {
		if got := h.attr(tt.path).Owner; got != tt.want {
			t.Errorf("%s: owner %+v, want %+v", tt.path, got, tt.want)
		}
	}
}
