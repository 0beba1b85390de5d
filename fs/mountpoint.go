package fs

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"syscall"

	"github.com/moby/sys/mountinfo"
)

// CheckMountpoint says, before anything is mounted, why path cannot take a
// mount, in words that name the fix: it must exist, be a directory, not be
// mounted already, and be empty unless allowNonEmpty (a mount hides what is
// under it). A failed mount(2) on a bad mountpoint can leave a dead mount
// behind; this check keeps it from being tried.
func CheckMountpoint(path string, allowNonEmpty bool) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mountpoint %s is a FUSE mount whose server is gone: unmount it first (fusermount3 -u %s)", path, path)
	case errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist: create it first (mkdir -p %s)", path, path)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", path, err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory: mount on an empty directory", path)
	}
	mounted, err := mountinfo.Mounted(path)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", path, err)
	}
	if mounted {
		return fmt.Errorf("mountpoint %s is mounted already: unmount it first (fusermount3 -u %s) or choose another", path, path)
	}
	if allowNonEmpty {
		return nil
	}
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", path, err)
	}
	defer d.Close()
	if _, err := d.Readdirnames(1); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("mountpoint %s: %w", path, err)
		}
		return fmt.Errorf("mountpoint %s is not empty: the mount would hide its files (--allow-non-empty mounts over them)", path)
	}
	return nil
}
