package layercache

import (
	"sync"
	"sync/atomic"

	"github.com/regfs/regfs/blobio"
)

// blockStore is all scheduling asks of storage: blocks by (blob, index) in
// memory (get, add), whether a tier holds one (has), and the disk tier's
// verified read (load) and atomic write (save). Storage never fetches.
type blockStore interface {
	get(b *blob, i int64, peek bool) ([]byte, bool)
	add(b *blob, i int64, d []byte)
	has(b *blob, i int64, t tiers) bool
	load(b *blob, i int64, dst []byte) ([]byte, bool)
	save(b *blob, i int64, d []byte)
}

var _ blockStore = (*store)(nil)

// tiers says where has looks.
type tiers uint8

const (
	tierMemory    tiers = 1 << iota // the memory LRU
	tierDiskIndex                   // the disk tier's index: no system call
	tierDisk                        // on disk, asking the file system when the index does not know (another Cache may have written it)
)

// store is the memory LRU and the disk tier, keyed by (blob, block). Safe
// for concurrent use; its locks are leaves (see sched.go).
type store struct {
	bs   int64
	mem  *memTier  // nil when the memory tier is off
	disk *diskTier // nil without a disk tier

	fetched fetchedBlobs // bytes read from Sources, per blob key

	idsMu sync.Mutex
	ids   map[string]uint64 // blob key → blob id

	served atomic.Int64 // bytes served, without a memory tier to stripe them
}

func newStore(opts Options) (*store, error) {
	s := &store{bs: opts.BlockSize, ids: make(map[string]uint64)}
	if opts.MemoryBytes > 0 {
		s.mem = newMemTier(opts.MemoryBytes, opts.BlockSize)
	}
	if opts.DiskDir != "" {
		var err error
		if s.disk, err = openDiskTier(opts.DiskDir, opts.DiskBytes, opts.Logger); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// blob describes src for storage and scheduling; stream allows src.Open.
func (s *store) blob(src blobio.Source, stream bool) *blob {
	key, size := src.Key(), src.Size()
	s.idsMu.Lock()
	id, ok := s.ids[key]
	if !ok {
		id = uint64(len(s.ids) + 1)
		s.ids[key] = id
	}
	s.idsMu.Unlock()
	// Counted by the blob's own key (its digest), whatever key the cache
	// files it under.
	src = countingSource{src, s.fetched.counter(src.Key())}
	b := &blob{src: src, stream: stream, key: key, id: id, size: size, bs: s.bs}
	if size > 0 {
		b.nblocks = (size + s.bs - 1) / s.bs
	}
	return b
}

// get returns block i of b from memory; peek leaves its recency alone.
func (s *store) get(b *blob, i int64, peek bool) ([]byte, bool) {
	if s.mem == nil {
		return nil, false
	}
	return s.mem.get(b.block(i), peek)
}

// add keeps block i of b in memory.
func (s *store) add(b *blob, i int64, d []byte) {
	if s.mem != nil {
		s.mem.add(b.block(i), d)
	}
}

// has reports whether one of tiers t holds block i of b.
func (s *store) has(b *blob, i int64, t tiers) bool {
	switch {
	case t&tierMemory != 0 && s.mem != nil && s.mem.contains(b.block(i)):
		return true
	case s.disk == nil:
		return false
	case t&tierDisk != 0:
		return s.disk.hasBlock(b.key, s.bs, i)
	case t&tierDiskIndex != 0:
		return s.disk.knowsBlock(b.key, s.bs, i)
	}
	return false
}

// load returns block i of b from disk if a whole, verified copy is there:
// read into dst when it is not nil (it must be the block's length), else
// into new memory.
func (s *store) load(b *blob, i int64, dst []byte) ([]byte, bool) {
	if s.disk == nil {
		return nil, false
	}
	if dst == nil {
		d := s.disk.readBlock(b.key, s.bs, i, b.blockLen(i))
		return d, d != nil
	}
	return dst, s.disk.readBlockInto(b.key, s.bs, i, dst)
}

// save writes block i of b to disk (a failure is logged: the block is
// simply fetched again later).
func (s *store) save(b *blob, i int64, d []byte) {
	if s.disk != nil {
		s.disk.writeBlock(b.key, s.bs, i, d)
	}
}

// countServed adds n bytes served from block i of b, on that block's
// memory shard so concurrent readers do not bounce one counter.
func (s *store) countServed(b *blob, i int64, n int) {
	if s.mem != nil {
		s.mem.shard(b.block(i)).served.Add(int64(n))
		return
	}
	s.served.Add(int64(n))
}

func (s *store) servedBytes() int64 {
	n := s.served.Load()
	if s.mem != nil {
		n += s.mem.served()
	}
	return n
}

func (s *store) stats() (MemoryStats, DiskStats) {
	var m MemoryStats
	var d DiskStats
	if s.mem != nil {
		m = s.mem.stats()
	}
	if s.disk != nil {
		d = s.disk.stats()
	}
	return m, d
}

// close drops the memory tier's blocks.
func (s *store) close() {
	if s.mem != nil {
		s.mem.purge()
	}
}
