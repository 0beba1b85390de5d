package layercache

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sirupsen/logrus"
)

// Defaults for the zero values of Options.
const (
	DefaultBlockSize      = 1 << 20
	DefaultMemoryBytes    = 512 << 20
	DefaultDiskBytes      = 10 << 30
	DefaultReadahead      = 16
	DefaultMaxParallel    = 4
	DefaultMaxFetchBlocks = 8
	DefaultFetchTimeout   = 2 * time.Minute
)

var (
	// ErrClosed is returned by reads on a closed Cache or Reader.
	ErrClosed = errors.New("layercache: closed")
	// ErrShortRead means the Source returned fewer bytes than a whole block
	// run without an error; such data is never cached.
	ErrShortRead = errors.New("layercache: short read from source")
)

// Options configures a Cache. The zero value of every field means its
// documented default.
type Options struct {
	// BlockSize is the unit of caching and of alignment of every fetch.
	// Default 1 MiB. A disk tier keeps blocks of different sizes apart.
	BlockSize int64
	// MemoryBytes bounds the bytes of blocks held by the memory LRU (keyed
	// by (blob key, block index)). Default 512 MiB; negative disables the
	// memory tier (each Reader then keeps only the blocks it is on).
	// Blocks being fetched, and blocks a reader is copying, are not counted.
	MemoryBytes int64
	// DiskDir is the directory of the disk tier; "" means no disk tier.
	DiskDir string
	// DiskBytes bounds the disk tier (blocks, PutFile files, trailers).
	// Default 10 GiB.
	DiskBytes int64
	// Readahead is the largest number of blocks fetched ahead of a sequential
	// reader; the window starts at 4 once a run is sequential, doubles with
	// each read that extends the run, and collapses on a random jump.
	// Default 16; negative disables readahead.
	Readahead int
	// MaxParallel bounds the ranged fetches in flight started by one Reader
	// (its own misses and its readahead). Default 4.
	MaxParallel int
	// MaxFetchBlocks is the largest run of blocks one ranged fetch covers;
	// longer missing runs become several fetches. Default 8.
	MaxFetchBlocks int
	// FetchTimeout bounds one fetch. A fetch may be shared by several
	// readers, so it runs under its own context (cancelled only by this
	// timeout, Cache.Close, or for readahead by Reader.Close), detached from
	// any one caller. Default 2 minutes.
	FetchTimeout time.Duration
	// Verify says when a blob with a content digest may be served: VerifyLazy
	// (default) serves reads as their blocks arrive and checks the digest
	// when a read completes an in-order pass over the whole blob; VerifyStrict
	// makes every read of a blob not verified yet wait for a verified pass
	// over it (and refuses blobs without a digest, ErrUnverifiable).
	// Either way only verified blocks are shared beyond the host that
	// served them, and a mismatch fails the blob (ErrDigestMismatch).
	Verify VerifyMode
	// Logger receives warnings (disk write failures, corrupt disk blocks)
	// and debug lines. Default logrus.StandardLogger().
	Logger logrus.FieldLogger
}

// VerifyMode is Options.Verify.
type VerifyMode int

const (
	VerifyLazy   VerifyMode = iota // serve as blocks arrive; verify passes
	VerifyStrict                   // serve only verified blobs
)

// String is the mode as the --verify flag spells it.
func (m VerifyMode) String() string {
	switch m {
	case VerifyLazy:
		return "lazy"
	case VerifyStrict:
		return "strict"
	}
	return fmt.Sprintf("VerifyMode(%d)", int(m))
}

// ParseVerifyMode parses "lazy" or "strict" ("" is lazy, the default).
func ParseVerifyMode(s string) (VerifyMode, error) {
	switch s {
	case "lazy", "":
		return VerifyLazy, nil
	case "strict":
		return VerifyStrict, nil
	}
	return 0, fmt.Errorf("verify mode %q: want lazy or strict", s)
}

func (o Options) withDefaults() (Options, error) {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 0 || o.BlockSize > math.MaxInt32 {
		return o, fmt.Errorf("layercache: block size %d out of range", o.BlockSize)
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.DiskBytes == 0 {
		o.DiskBytes = DefaultDiskBytes
	}
	if o.DiskBytes < 0 {
		return o, fmt.Errorf("layercache: disk bound %d is negative", o.DiskBytes)
	}
	if o.Readahead == 0 {
		o.Readahead = DefaultReadahead
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = DefaultMaxParallel
	}
	if o.MaxFetchBlocks <= 0 {
		o.MaxFetchBlocks = DefaultMaxFetchBlocks
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.Verify != VerifyLazy && o.Verify != VerifyStrict {
		return o, fmt.Errorf("layercache: %v is not a verify mode", o.Verify)
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	return o, nil
}
