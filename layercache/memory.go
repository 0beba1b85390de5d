package layercache

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// memTier is the memory LRU, split into shards, each with its own lock, LRU
// and an equal share of the byte bound, so concurrent hits on different
// blocks do not serialize on one lock. Small bounds get one shard (an exact
// LRU); a shard always holds at least minShardBlocks blocks.
type memTier struct {
	shards []memShard
	mask   uint64
	limit  int64
}

const (
	maxMemShards   = 16
	minShardBlocks = 64
)

type memShard struct {
	mu        sync.Mutex
	lru       *simplelru.LRU[blockKey, []byte]
	bytes     int64 // guarded by mu
	limit     int64
	hits      int64 // guarded by mu
	evictions int64 // guarded by mu
	served    atomic.Int64
	_         [64]byte // keep shards on separate cache lines
}

func newMemTier(limit, blockSize int64) *memTier {
	n := 1
	for n < maxMemShards && limit/int64(2*n) >= minShardBlocks*blockSize {
		n *= 2
	}
	m := &memTier{shards: make([]memShard, n), mask: uint64(n - 1), limit: limit}
	for i := range m.shards {
		m.shards[i].lru, _ = simplelru.NewLRU[blockKey, []byte](math.MaxInt, nil) // bounded by bytes
		m.shards[i].limit = limit / int64(n)
	}
	return m
}

func (m *memTier) shard(k blockKey) *memShard {
	h := k.blob*0x9E3779B97F4A7C15 ^ uint64(k.index)*0xBF58476D1CE4E5B9
	h ^= h >> 31
	return &m.shards[h&m.mask]
}

// get looks a block up; peek leaves its recency alone (one-pass readers
// must not keep blocks warm).
func (m *memTier) get(k blockKey, peek bool) ([]byte, bool) {
	s := m.shard(k)
	s.mu.Lock()
	var d []byte
	var ok bool
	if peek {
		d, ok = s.lru.Peek(k)
	} else {
		d, ok = s.lru.Get(k)
	}
	if ok {
		s.hits++
	}
	s.mu.Unlock()
	return d, ok
}

func (m *memTier) contains(k blockKey) bool {
	s := m.shard(k)
	s.mu.Lock()
	ok := s.lru.Contains(k)
	s.mu.Unlock()
	return ok
}

// add inserts a block and evicts the shard's least recently used blocks
// until its share of the bound holds again.
func (m *memTier) add(k blockKey, d []byte) {
	s := m.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lru.Contains(k) {
		return
	}
	s.lru.Add(k, d)
	s.bytes += int64(len(d))
	for s.bytes > s.limit {
		_, v, ok := s.lru.RemoveOldest()
		if !ok {
			break
		}
		s.bytes -= int64(len(v))
		s.evictions++
	}
}

// remove drops a block if held.
func (m *memTier) remove(k blockKey) {
	s := m.shard(k)
	s.mu.Lock()
	if d, ok := s.lru.Peek(k); ok {
		s.lru.Remove(k)
		s.bytes -= int64(len(d))
	}
	s.mu.Unlock()
}

func (m *memTier) stats() MemoryStats {
	st := MemoryStats{LimitBytes: m.limit}
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		st.Hits += s.hits
		st.Evictions += s.evictions
		st.Blocks += int64(s.lru.Len())
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}

func (m *memTier) purge() {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		s.lru.Purge()
		s.bytes = 0
		s.mu.Unlock()
	}
}

// served counts bytes returned to readers on the shard of the read's first
// block, so concurrent readers do not bounce one counter between cores.
func (m *memTier) served() int64 {
	var n int64
	for i := range m.shards {
		n += m.shards[i].served.Load()
	}
	return n
}
