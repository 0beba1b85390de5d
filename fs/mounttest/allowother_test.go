package mounttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// With --allow-other the kernel enforces each file's mode and owner
// (default_permissions): a root-owned 0700 file in an image is not
// readable by another uid, a user's 0600 file is readable by that user.
func TestAllowOtherEnforcesPermissions(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads as other uids")
	}
	p := startRegfs(t, "--allow-other")
	// t.TempDir's parent is 0700: let the other uids reach the mount.
	if err := os.Chmod(filepath.Dir(p.mnt), 0o755); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(p.mnt, "test/small:latest")
	base := filepath.Join(image, "layers", chainIDs(fixtures.Small.DiffIDs)[0], "fs")
	catAs := func(uid uint32, path string) (string, error) {
		cmd := exec.Command("cat", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		uid    uint32
		path   string
		wantOK bool
	}{
		{1000, filepath.Join(image, "rootfs/bin/tool"), false},   // root:root 0700
		{0, filepath.Join(image, "rootfs/bin/tool"), true},       // its owner
		{2000, filepath.Join(base, "home/user/.profile"), false}, // 1000:1000 0600
		{1000, filepath.Join(base, "home/user/.profile"), true},  // its owner
		{2000, filepath.Join(image, "rootfs/etc/hostname"), true},
	} {
		out, err := catAs(tc.uid, tc.path)
		switch {
		case tc.wantOK && err != nil:
			t.Errorf("cat %s as uid %d: got %v: %s, want it read", tc.path, tc.uid, err, out)
		case !tc.wantOK && (err == nil || !strings.Contains(out, "Permission denied")):
			t.Errorf("cat %s as uid %d: got %v: %q, want Permission denied (EACCES)", tc.path, tc.uid, err, out)
		}
	}
}
