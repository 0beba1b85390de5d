package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The generated man pages cover every command, and regfs-mount(1) lists
// mount's flags and its -o options.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCLI(t, "man", dir); err != nil {
		t.Fatalf("regfs man: %v", err)
	}
	for _, page := range []string{"regfs.1", "regfs-mount.1", "regfs-prefetch.1", "regfs-cache-clear.1", "regfs-version.1"} {
		if _, err := os.Stat(filepath.Join(dir, page)); err != nil {
			t.Errorf("man page %s: %v", page, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "regfs-mount.1"))
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(b), `\-`, "-")
	for _, want := range []string{".TH \"REGFS\" \"1\"", "--cache-size", "--allow-other", "--options", "--noexec", "fuse.regfs"} {
		if !strings.Contains(page, want) {
			t.Errorf("regfs-mount.1 lacks %q", want)
		}
	}
	if strings.Contains(page, "--debug-fuse") {
		t.Errorf("regfs-mount.1 lists the hidden --debug-fuse")
	}
}
