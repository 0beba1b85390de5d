package layerindex

import (
	"context"
	"fmt"
	"sync"
)

// cursorPool bounds the decoding cursors of a Manager, across its layers,
// and so the memory they hold (each up to a cursorWindow of output, a span
// buffer of Options.ReadSize and a decoder's state): more readers than
// cursors wait for one. Cursors not in use stay in the pool with their
// buffers and their place in a stream; when a new one is needed and the
// bound is reached, the least recently used is taken over.
type cursorPool struct {
	max     int
	mu      sync.Mutex
	live    int       // cursors in existence, in use or idle
	idle    []*cursor // not in use, least recently used first
	waiters int
	freed   chan struct{} // closed when a cursor is put back and someone waits
}

func newCursorPool(max int) *cursorPool {
	return &cursorPool{max: max, freed: make(chan struct{})}
}

// take returns a cursor for reading l at off, for owner (a TarReader) or
// shared (nil): owner's own cursor if it is idle, else for a shared read
// the idle one of l best placed for off, else a new one, else the least
// recently used idle one; if every cursor is in use it waits for one.
func (p *cursorPool) take(ctx context.Context, l *Layer, off int64, owner *TarReader) (*cursor, error) {
	for {
		p.mu.Lock()
		if c := p.takeIdleLocked(l, off, owner); c != nil {
			p.mu.Unlock()
			return c, nil
		}
		if p.live < p.max {
			p.live++
			p.mu.Unlock()
			return &cursor{l: l, owner: owner, streaming: owner != nil}, nil
		}
		if len(p.idle) > 0 {
			c := p.idle[0]
			p.idle = p.idle[1:]
			p.mu.Unlock()
			c.retarget(l, owner)
			return c, nil
		}
		p.waiters++
		wait := p.freed
		p.mu.Unlock()
		select {
		case <-wait:
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
		case <-ctx.Done():
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			return nil, fmt.Errorf("layer %s: wait for one of %d decoders: %w", l.key, p.max, ctx.Err())
		}
	}
}

func (p *cursorPool) takeIdleLocked(l *Layer, off int64, owner *TarReader) *cursor {
	best := -1
	for i, c := range p.idle {
		if owner != nil {
			if c.owner == owner {
				best = i
				break
			}
			continue
		}
		if c.l != l || c.owner != nil {
			continue
		}
		if off >= c.winOff && off < c.end() {
			best = i
			break
		}
		if !c.eof && c.end() <= off && (best < 0 || c.end() > p.idle[best].end()) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	c := p.idle[best]
	p.idle = append(p.idle[:best], p.idle[best+1:]...)
	return c
}

// put returns a cursor taken from the pool.
func (p *cursorPool) put(c *cursor) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.wakeLocked()
	p.mu.Unlock()
}

func (p *cursorPool) wakeLocked() {
	if p.waiters > 0 {
		close(p.freed)
		p.freed = make(chan struct{})
	}
}

// release frees owner's idle cursor, if the pool has not given it to
// another reader meanwhile.
func (p *cursorPool) release(owner *TarReader) {
	p.mu.Lock()
	var drop *cursor
	for i, c := range p.idle {
		if c.owner == owner {
			drop = c
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.live--
			p.wakeLocked()
			break
		}
	}
	p.mu.Unlock()
	if drop != nil {
		drop.close()
	}
}
