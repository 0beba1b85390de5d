package layerindex

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// build is one index pass; waiters hold it, the layer forgets it when done.
type build struct {
	done chan struct{}
	idx  *layerIndex
	err  error
}

// passEnd is how the last pass ended, for Progress.
type passEnd struct {
	state IndexState
	err   string
}

// indexBuild is a layer's index pass state: at most one pass runs at a
// time and everyone who needs the index waits for it; it remembers how the
// last one ended and counts how far the running one got.
type indexBuild struct {
	mu          sync.Mutex
	running     *build // nil when no pass runs
	prefetching bool   // a Prefetch is settling eStargz before any pass
	lastErr     error  // how the last pass ended

	done atomic.Int64            // blob bytes read by the running (or last) pass
	end  atomic.Pointer[passEnd] // nil: no pass started yet
}

// current returns the running pass, nil if none.
func (b *indexBuild) current() *build {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

// lastFailed reports whether no pass runs and the last one failed.
func (b *indexBuild) lastFailed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running == nil && b.lastErr != nil
}

// beginPrefetch reports whether a Prefetch may start: no pass runs and no
// other Prefetch does. endPrefetch ends one that began.
func (b *indexBuild) beginPrefetch() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running != nil || b.prefetching {
		return false
	}
	b.prefetching = true
	return true
}

func (b *indexBuild) endPrefetch() {
	b.mu.Lock()
	b.prefetching = false
	b.mu.Unlock()
}

func (b *indexBuild) progress() Progress {
	p := Progress{State: IndexIdle, Done: b.done.Load()}
	if e := b.end.Load(); e != nil {
		p.State, p.Err = e.state, e.err
	}
	return p
}

// startBuild returns the running pass, or starts one (detached from ctx,
// bounded by Options.BuildTimeout) unless the index is already in memory.
func (l *Layer) startBuild(ctx context.Context) *build {
	lb := &l.build
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.running != nil {
		return lb.running
	}
	if idx, ok := l.m.indexes.Peek(l.key); ok {
		// Built or loaded since the caller looked (Prefetch looks before
		// its eStargz check, which takes a round trip): no second pass.
		b := &build{done: make(chan struct{}), idx: idx}
		close(b.done)
		return b
	}
	b := &build{done: make(chan struct{})}
	lb.running = b
	lb.end.Store(&passEnd{state: IndexBuilding})
	lb.done.Store(0)
	jctx, cancel := l.m.jobContext(ctx)
	go func() {
		defer cancel()
		b.idx, b.err = l.loadOrBuild(jctx)
		lb.mu.Lock()
		lb.running = nil
		lb.lastErr = b.err
		if b.err != nil {
			lb.end.Store(&passEnd{state: IndexFailed, err: b.err.Error()})
		} else {
			b.idx, _ = l.m.keep(l.key, b.idx) // over budget (dropped meanwhile): not kept, its waiters still use it
			lb.end.Store(&passEnd{state: IndexReady})
		}
		lb.mu.Unlock()
		close(b.done)
	}()
	return b
}

// index returns the layer's index, building it (once, shared) if needed.
// A cancelled ctx stops the wait, not the shared pass.
func (l *Layer) index(ctx context.Context) (*layerIndex, error) {
	if idx, ok := l.m.indexes.Get(l.key); ok {
		return idx, nil
	}
	b := l.startBuild(ctx)
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for index of layer %s: %w", l.key, ctx.Err())
	}
	if b.err != nil {
		return nil, b.err
	}
	return b.idx, nil
}

// waitPass waits for a running index pass to finish (its index ready or
// its error recorded); it never starts one.
func (l *Layer) waitPass(ctx context.Context) {
	b := l.build.current()
	if b == nil {
		return
	}
	select {
	case <-b.done:
	case <-ctx.Done():
	}
}
