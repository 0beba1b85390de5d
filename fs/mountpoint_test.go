package fs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{file, filepath.Join(full, "x")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mounted := ""
	if os.Geteuid() == 0 {
		mounted = filepath.Join(dir, "mounted")
		if err := os.Mkdir(mounted, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", mounted, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(mounted, syscall.MNT_DETACH) })
	}
	for _, tc := range []struct {
		name     string
		path     string
		nonEmpty bool
		want     string // in the error; "" for none
	}{
		{"empty directory", empty, false, ""},
		{"missing", filepath.Join(dir, "nope"), false, "does not exist: create it first (mkdir -p"},
		{"regular file", file, false, "is not a directory"},
		{"regular file, non-empty allowed", file, true, "is not a directory"},
		{"directory with files", full, false, "is not empty: the mount would hide its files (--allow-non-empty"},
		{"directory with files, allowed", full, true, ""},
		{"mounted already", mounted, false, "is mounted already: unmount it first (fusermount3 -u"},
		{"mounted already, non-empty allowed", mounted, true, "is mounted already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == "" {
				t.Skip("mounting a tmpfs needs root")
			}
			err := CheckMountpoint(tc.path, tc.nonEmpty)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
