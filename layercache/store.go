package layercache

import (
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/blobio"
)

// blockStore is all scheduling asks of storage: blocks by (blob, index) in
// memory (get, add), whether a tier holds one (has), and the disk tier's
// verified read (load) and atomic write (save), and the check of a fetched
// block against the blob's known block digests (vet). Storage never fetches.
type blockStore interface {
	get(b *blob, i int64, peek bool) ([]byte, bool)
	add(b *blob, i int64, d []byte)
	has(b *blob, i int64, t tiers) bool
	load(b *blob, i int64, dst []byte) ([]byte, bool)
	save(b *blob, i int64, d []byte)
	vet(b *blob, i int64, d []byte) error
}

var _ blockStore = (*store)(nil)

// tiers says where has looks.
type tiers uint8

const (
	tierMemory    tiers = 1 << iota // the memory LRU
	tierDiskIndex                   // the disk tier's index: no system call
	tierDisk                        // on disk, asking the file system when the index does not know (another Cache may have written it)
)

// store is the memory LRU and the disk tier, keyed by (blob, block), and
// what each blob is trusted by (trust.go). Safe for concurrent use; its
// locks are leaves (see sched.go).
//
// A blob's blocks live under its key (host-qualified: cacheKey) until its
// digest is verified; verified blocks live on disk under the digest, where
// every origin reads them. Memory is always keyed by the blob's key.
type store struct {
	bs   int64
	mem  *memTier  // nil when the memory tier is off
	disk *diskTier // nil without a disk tier
	log  logrus.FieldLogger

	fetched fetchedBlobs // bytes read from Sources, per blob key

	idsMu sync.Mutex
	ids   map[string]uint64 // blob key → blob id

	trustMu   sync.Mutex
	trusts    map[string]*blobTrust   // by blob key
	digests   map[string]*digestTrust // by digest
	promoting sync.WaitGroup          // promote goroutines; Add only under trustMu while !closed
	closed    bool                    // guarded by trustMu

	served atomic.Int64 // bytes served, without a memory tier to stripe them
}

func newStore(opts Options) (*store, error) {
	s := &store{
		bs: opts.BlockSize, ids: make(map[string]uint64), log: opts.Logger,
		trusts: make(map[string]*blobTrust), digests: make(map[string]*digestTrust),
	}
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
	o := src.Origin()
	key, size := cacheKey(src, o), src.Size()
	s.idsMu.Lock()
	id, ok := s.ids[key]
	if !ok {
		id = uint64(len(s.ids) + 1)
		s.ids[key] = id
	}
	s.idsMu.Unlock()
	b := &blob{src: src, stream: stream, key: key, host: o.Host, id: id, size: size, bs: s.bs,
		// Counted by the blob's own key (its digest), whatever key the cache
		// files it under.
		fetched: s.fetched.counter(src.Key())}
	if size > 0 {
		b.nblocks = (size + s.bs - 1) / s.bs
	}
	b.trust = s.trustFor(key, o, b.nblocks)
	if b.trust.dt != nil {
		b.digest = o.Digest
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
		return s.disk.hasBlock(b.key, s.bs, i) || b.shared() && s.disk.hasBlock(b.digest, s.bs, i)
	case t&tierDiskIndex != 0:
		return s.disk.knowsBlock(b.key, s.bs, i) || b.shared() && s.disk.knowsBlock(b.digest, s.bs, i)
	}
	return false
}

// load returns block i of b from disk if a whole, verified copy is there:
// read into dst when it is not nil (it must be the block's length), else
// into new memory.
//
// The verified copy under the digest comes first; an unverified copy under
// b's key is vetted against the block digests known (trust.go).
func (s *store) load(b *blob, i int64, dst []byte) ([]byte, bool) {
	if s.disk == nil || b.trust.err() != nil {
		return nil, false
	}
	if b.shared() {
		// Another process may have verified it: ask the file system.
		if d, ok := s.disk.readBlockIfThere(b.digest, s.bs, i, b.blockLen(i), dst); ok {
			return d, true
		}
	}
	d, ok := s.loadKey(b.key, i, b.blockLen(i), dst)
	if !ok && b.shared() && b.trust.states() != nil {
		// promote may have moved it meanwhile.
		return s.disk.readBlockIfThere(b.digest, s.bs, i, b.blockLen(i), dst)
	}
	if !ok || !b.shared() {
		return d, ok
	}
	if s.vet(b, i, d) != nil {
		return nil, false
	}
	if b.trust.states() != nil {
		// Vetted against the verified block states: it may be shared now
		// (a promotion cut short by Close ends here).
		s.disk.writeBlock(b.digest, s.bs, i, d)
		s.disk.removeBlock(b.key, s.bs, i)
	}
	return d, true
}

// loadKey reads block i of key from disk, into dst when it is not nil.
func (s *store) loadKey(key string, i, n int64, dst []byte) ([]byte, bool) {
	if dst == nil {
		d := s.disk.readBlock(key, s.bs, i, n)
		return d, d != nil
	}
	return dst, s.disk.readBlockInto(key, s.bs, i, dst)
}

// save writes block i of b to disk (a failure is logged: the block is
// simply fetched again later): under the digest when it matches the
// blob's verified block digest, else under b's key. A failed blob's
// blocks are not written.
func (s *store) save(b *blob, i int64, d []byte) {
	if s.disk == nil || b.trust.err() != nil {
		return
	}
	if st := b.trust.states(); st != nil && b.shared() && st.check(b.trust.want.Algorithm(), i, d) {
		s.disk.writeBlock(b.digest, s.bs, i, d)
		return
	}
	s.disk.writeBlock(b.key, s.bs, i, d)
	if b.trust.err() != nil {
		s.disk.removeBlock(b.key, s.bs, i) // failed while this write went on
		return
	}
	if st := b.trust.states(); st != nil && b.shared() {
		// Verified while this write went on: promote may have passed it.
		s.promoteBlock(b, i, st)
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

// close waits for promotions and drops the memory tier's blocks.
func (s *store) close() {
	s.trustMu.Lock()
	s.closed = true
	s.trustMu.Unlock()
	s.promoting.Wait()
	if s.mem != nil {
		s.mem.purge()
	}
}
