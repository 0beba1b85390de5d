package layercache

import (
	"sync/atomic"

	"github.com/regfs/regfs/blobio"
)

// blob is one Source as one Reader sees it. Storage keys its blocks by id
// (memory) and key (disk); scheduling reads them from src.
type blob struct {
	src     blobio.Source
	stream  bool   // multi-block runs may be read with src.Open (not OpenOptions.Ranged)
	key     string // what its blocks are stored under until verified: cacheKey
	digest  string // the Source's declared digest, "" if none: the key of verified blocks
	host    string // the Source's origin host
	trust   *blobTrust
	id      uint64 // small number for key, so memory block keys hash fast
	size    int64
	bs      int64 // block size
	nblocks int64
	fetched *atomic.Int64 // bytes read from src, shared by every blob of its Key
}

// blockLen is the length of block i: the block size, or less for the last.
func (b *blob) blockLen(i int64) int64 {
	return min(b.bs, b.size-i*b.bs)
}

// blockKey names block index of the blob with id blob.
type blockKey struct {
	blob  uint64
	index int64
}

func (b *blob) block(i int64) blockKey { return blockKey{b.id, i} }
