package layercache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// blockSizeStampName is the file under blocks/ recording the block size the
// disk tier's blocks were written with. It sits inside blocks/ so clearing
// the blocks clears it too; its leading dot keeps it apart from blob
// directories (escapeName never yields a leading '.').
const blockSizeStampName = ".block-size"

// ErrBlockSizeMismatch is returned by StampBlockSize when the disk tier
// was stamped with another block size.
var ErrBlockSizeMismatch = errors.New("layercache: disk tier block size differs")

// BlockSizeMismatchError says which block size the disk tier was written
// with and which one was asked for.
type BlockSizeMismatchError struct {
	Dir          string
	Stamped, Got int64
}

func (e *BlockSizeMismatchError) Error() string {
	return fmt.Sprintf("disk cache %s holds blocks of %d bytes, this cache asks for %d-byte blocks", e.Dir, e.Stamped, e.Got)
}

func (e *BlockSizeMismatchError) Unwrap() error { return ErrBlockSizeMismatch }

// StampBlockSize pins the disk tier at dir (Options.DiskDir) to one block
// size: it records blockSize if the tier has no stamp yet (a new or
// cleared tier) and returns a *BlockSizeMismatchError for a tier stamped
// with another size. The tier itself keeps blocks of different sizes apart,
// so a Cache with another block size would silently read none of the
// blocks there; a caller that shares a tier between runs (a prefetch and
// the mount after it) calls this before New to say so instead. The stamp
// is written once, by link(2) of a complete temp file, so two processes
// stamping a new tier at once agree on whichever came first. Clear and
// ClearBlocks remove it with the blocks.
func StampBlockSize(dir string, blockSize int64) error {
	blocks := filepath.Join(dir, blocksDirName)
	if err := os.MkdirAll(blocks, 0o755); err != nil {
		return fmt.Errorf("layercache: disk tier: %w", err)
	}
	stamp := filepath.Join(blocks, blockSizeStampName)
	if got, err := readBlockSizeStamp(stamp); err == nil {
		return compareBlockSize(dir, got, blockSize)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := os.CreateTemp(blocks, tmpPrefix+"stamp-")
	if err != nil {
		return fmt.Errorf("layercache: disk tier: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(strconv.FormatInt(blockSize, 10) + "\n")
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("layercache: disk tier: block size stamp: %w", werr)
	}
	if err := os.Link(tmp.Name(), stamp); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("layercache: disk tier: block size stamp: %w", err)
	}
	got, err := readBlockSizeStamp(stamp)
	if err != nil {
		return err
	}
	return compareBlockSize(dir, got, blockSize)
}

func readBlockSizeStamp(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("layercache: disk tier: block size stamp %s: want a positive number, got %q", path, b)
	}
	return n, nil
}

func compareBlockSize(dir string, stamped, want int64) error {
	if stamped != want {
		return &BlockSizeMismatchError{Dir: dir, Stamped: stamped, Got: want}
	}
	return nil
}
