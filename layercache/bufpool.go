package layercache

import (
	"sync"
	"sync/atomic"
)

// Streams read into recycled buffers, so a sequential pass touches no new
// memory (why: docs/design/layercache.md). A buffer goes back to its pool
// once the stream and every reader that took it are done with it.

// maxPooledBytes bounds the recycled buffers (per block size), part of the
// fixed memory overhead beside the cache's bounds. They are carved from
// slabs of slabBytes, asked for with transparent huge pages where the
// system allows (slab_linux.go): a first write then costs one fault per
// 2 MiB instead of one per 4 KiB. When every pooled buffer is in use, a
// stream gets ordinary memory, which is not recycled.
const (
	maxPooledBytes = 64 << 20
	slabBytes      = 8 << 20
)

// buf is a recycled block buffer with a count of its holders. The stream
// that filled it holds one reference until it drops the block; every reader
// that takes the block from the stream holds one until it has copied it or
// its FUSE reply was written. At zero it goes back to the pool: nothing may
// touch data after its release.
type buf struct {
	data []byte // the block: full[:n]
	full []byte
	refs atomic.Int32
	pool *bufPool
}

// badReleases counts releases of a buffer nobody held: a bug, which tests
// check for. Such a buffer is not recycled again.
var badReleases atomic.Int64

func (b *buf) ref() { b.refs.Add(1) }

// release drops one reference.
func (b *buf) release() {
	switch n := b.refs.Add(-1); {
	case n == 0 && b.pool != nil:
		b.pool.put(b)
	case n < 0:
		badReleases.Add(1)
	}
}

// bufPool keeps free buffers of one block size.
type bufPool struct {
	size   int
	mu     sync.Mutex
	free   []*buf
	slab   []byte // what is left of the current slab
	carved int    // bytes of pooled buffers made so far
}

var (
	poolsMu sync.Mutex
	pools   = map[int]*bufPool{}
)

// poolFor returns the process-wide pool of buffers of size bytes; every
// Cache of one block size shares it.
func poolFor(size int) *bufPool {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	p := pools[size]
	if p == nil {
		p = &bufPool{size: size}
		pools[size] = p
	}
	return p
}

// get returns a buffer of n ≤ size bytes holding one reference. Its bytes
// are whatever it held before: the caller overwrites all n of them.
func (p *bufPool) get(n int) *buf {
	p.mu.Lock()
	var b *buf
	if k := len(p.free); k > 0 {
		b = p.free[k-1]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
	}
	if b == nil && p.carved+p.size <= maxPooledBytes {
		if len(p.slab) < p.size {
			p.slab = allocSlab(max(slabBytes/p.size, 1) * p.size)
		}
		if len(p.slab) >= p.size {
			b = &buf{full: p.slab[:p.size:p.size], pool: p}
			p.slab = p.slab[p.size:]
			p.carved += p.size
		}
	}
	p.mu.Unlock()
	if b == nil {
		b = &buf{full: make([]byte, p.size)} // not pooled: the GC frees it
	}
	b.data = b.full[:n:n]
	b.refs.Store(1)
	return b
}

func (p *bufPool) put(b *buf) {
	b.data = nil
	p.mu.Lock()
	p.free = append(p.free, b)
	p.mu.Unlock()
}

// releaseAll drops one reference of each buffer in refs and empties it.
func releaseAll(refs []*buf) []*buf {
	for i, b := range refs {
		b.release()
		refs[i] = nil
	}
	return refs[:0]
}
