package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestDevMajorMinor(t *testing.T) {
	tests := []struct {
		dev          uint64
		major, minor uint64
	}{
		{0x0027, 0, 39},                   // 0:39, a FUSE mount
		{0xfd00, 253, 0},                  // 253:0
		{0x0000000100000301, 3, 0x100001}, // minor bits above 20 (glibc layout)
	}
	for _, tt := range tests {
		if got := devMajor(tt.dev); got != tt.major {
			t.Errorf("devMajor(%#x): got %d want %d", tt.dev, got, tt.major)
		}
		if got := devMinor(tt.dev); got != tt.minor {
			t.Errorf("devMinor(%#x): got %d want %d", tt.dev, got, tt.minor)
		}
	}
}

func TestSetKernelReadahead(t *testing.T) {
	mnt := t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	old := bdiDir
	t.Cleanup(func() { bdiDir = old })
	bdiDir = t.TempDir()
	dev := filepath.Join(bdiDir, fmt.Sprintf("%d:%d", devMajor(st.Dev), devMinor(st.Dev)))

	if err := setKernelReadahead(mnt, 8<<20); err == nil {
		t.Errorf("no bdi directory: got no error")
	}
	if err := os.Mkdir(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		n    int
		want string
	}{{8 << 20, "8192"}, {100, "4"}} {
		if err := setKernelReadahead(mnt, tt.n); err != nil {
			t.Fatalf("setKernelReadahead(%d): %v", tt.n, err)
		}
		got, err := os.ReadFile(filepath.Join(dev, "read_ahead_kb"))
		if err != nil || string(got) != tt.want {
			t.Errorf("read_ahead_kb after %d bytes: got %q, %v; want %q", tt.n, got, err, tt.want)
		}
	}
	if err := setKernelReadahead(filepath.Join(mnt, "missing"), 1<<20); err == nil {
		t.Errorf("missing mountpoint: got no error")
	}
}
