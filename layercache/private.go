package layercache

import (
	"sync"
	"sync/atomic"
)

// privateBlocks are the blocks a SkipMemory Reader is on, kept out of the
// memory LRU: at most about a readahead window and a fetch run. Its lock
// is a leaf. Every method is a no-op (or finds nothing) on a nil
// *privateBlocks, which is what a Reader keeping blocks in memory has.
type privateBlocks struct {
	limit int           // blocks kept at most
	at    *atomic.Int64 // the reader's latest block: what is kept

	mu sync.Mutex
	m  map[int64][]byte // nil once closed
}

func newPrivateBlocks(opts Options, at *atomic.Int64) *privateBlocks {
	return &privateBlocks{
		limit: max(opts.Readahead, 0) + opts.MaxFetchBlocks + 2,
		at:    at,
		m:     make(map[int64][]byte),
	}
}

// get returns block i, or nil.
func (p *privateBlocks) get(i int64) []byte {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	d := p.m[i]
	p.mu.Unlock()
	return d
}

func (p *privateBlocks) has(i int64) bool { return p.get(i) != nil }

// fill sets out[j] to block first+j where kept (nil elsewhere).
func (p *privateBlocks) fill(first int64, out [][]byte) {
	if p == nil {
		return
	}
	p.mu.Lock()
	for j := range out {
		out[j] = p.m[first+int64(j)]
	}
	p.mu.Unlock()
}

// add keeps block i.
func (p *privateBlocks) add(i int64, d []byte) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		return
	}
	p.m[i] = d
	p.boundLocked()
}

// keep keeps blocks first+j. Recycled buffers (taken from a stream, held
// in refs) are not kept: they go back to their pool once the read is done.
func (p *privateBlocks) keep(first int64, blocks [][]byte, refs []*buf) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		return
	}
	for j, d := range blocks {
		if d != nil && !recycled(d, refs) {
			p.m[first+int64(j)] = d
		}
	}
	p.boundLocked()
}

// recycled reports whether block d is one of the buffers in refs.
func recycled(d []byte, refs []*buf) bool {
	for _, b := range refs {
		if len(d) > 0 && len(b.full) > 0 && &b.full[0] == &d[0] {
			return true
		}
	}
	return false
}

// boundLocked drops the blocks furthest from the reader beyond the limit.
func (p *privateBlocks) boundLocked() {
	for len(p.m) > p.limit {
		var far int64 = -1
		var farDist int64 = -1
		at := p.at.Load()
		for i := range p.m {
			d := i - at
			if d < 0 {
				d = -d * 4 // behind the reader: least likely to be read again
			}
			if d > farDist {
				far, farDist = i, d
			}
		}
		delete(p.m, far)
	}
}

// prune drops the blocks the reader has moved past.
func (p *privateBlocks) prune(first int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	for i := range p.m {
		if i < first-1 {
			delete(p.m, i)
		}
	}
	p.mu.Unlock()
}

// close drops every block; later adds are ignored.
func (p *privateBlocks) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.m = nil
	p.mu.Unlock()
}
