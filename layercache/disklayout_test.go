package layercache

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestStampBlockSize(t *testing.T) {
	dir := t.TempDir()
	must(t, StampBlockSize(dir, 1<<20)) // a new tier takes the size
	must(t, StampBlockSize(dir, 1<<20)) // and keeps it
	c := newTestCache(t, Options{BlockSize: 1 << 20, DiskDir: dir})
	if u, err := DiskUsage(context.Background(), dir); err != nil || len(u.Blobs)+len(u.Files) != 0 {
		t.Errorf("DiskUsage of a stamped tier: got %+v, %v; want no blobs or files (the stamp is not one)", u, err)
	}
	c.Close()

	err := StampBlockSize(dir, 64<<10)
	var mm *BlockSizeMismatchError
	if !errors.Is(err, ErrBlockSizeMismatch) || !errors.As(err, &mm) || mm.Stamped != 1<<20 || mm.Got != 64<<10 {
		t.Fatalf("StampBlockSize with another size: got %v, want a mismatch of 1048576 and 65536", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "1048576") || !strings.Contains(msg, "65536") {
		t.Errorf("mismatch message %q: want both sizes", msg)
	}

	must(t, ClearBlocks(context.Background(), dir)) // clearing the blocks frees the size
	must(t, StampBlockSize(dir, 64<<10))
	if err := StampBlockSize(dir, 1<<20); !errors.Is(err, ErrBlockSizeMismatch) {
		t.Errorf("after restamping with 64K: got %v, want a mismatch for 1M", err)
	}
}
