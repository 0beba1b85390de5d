package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

const msRdonlyNosuidNodev = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV

// bdiDir is where Linux shows the backing device of each mount by its
// device number; a variable so tests can point it elsewhere.
var bdiDir = "/sys/class/bdi"

// setKernelReadahead sets the kernel's readahead for the FUSE mount at
// mountpoint to n bytes. The kernel offers a FUSE server at most the
// readahead of the mount's backing device (128 KiB by default) in INIT, so
// MaxReadAhead alone cannot raise it; the device's read_ahead_kb can (it is
// writable by root, and read when a file is opened). A larger window makes
// the kernel send a sequential read(2) as several MaxWrite-sized READs in
// flight at once instead of one 128 KiB READ at a time.
func setKernelReadahead(mountpoint string, n int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("kernel readahead: %w", err)
	}
	major, minor := devMajor(st.Dev), devMinor(st.Dev)
	path := filepath.Join(bdiDir, fmt.Sprintf("%d:%d", major, minor), "read_ahead_kb")
	if err := os.WriteFile(path, []byte(strconv.Itoa(max(n>>10, 4))), 0); err != nil {
		return fmt.Errorf("kernel readahead: %w", err)
	}
	return nil
}

// devMajor and devMinor decode a Linux dev_t (glibc's gnu_dev_major/minor).
func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
