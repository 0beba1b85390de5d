package layerindex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Layer is one blob's uncompressed views. Get it from Manager.Layer; it is
// safe for concurrent use and shared by everything that reads the blob.
type Layer struct {
	m     *Manager
	key   string
	blob  Blob
	lopts LayerOptions

	formatOnce sync.Once
	format     Format
	formatErr  error

	// Lock order: mu, then a cursor's mu (never the other way round).
	mu          sync.Mutex
	building    *build    // the running index pass, nil when none
	prefetching bool      // a Prefetch is settling eStargz before any pass
	lastErr     error     // how the last pass ended
	pool        []*cursor // shared cursors for TarReadAt, most recent last

	sgState     stargzState
	noDiskIndex atomic.Bool // no persisted index was found
	sgOpen      atomic.Bool // the eStargz TOC is read: the layer's index needs no pass

	share      atomic.Pointer[passShare] // the gzip pass's output, for TarReaders (inflateshare.go)
	tarReaders atomic.Int32              // open TarReaders

	done  atomic.Int64 // blob bytes read by the running (or last) pass
	state atomic.Value // string: "idle", "building", "ready", "failed: ..."
}

// build is one index pass; waiters hold it, the Layer forgets it when done.
type build struct {
	done chan struct{}
	idx  *layerIndex
	err  error
}

// Key returns the blob key this Layer was made for.
func (l *Layer) Key() string { return l.key }

// Format returns how the blob is stored, read from its first bytes.
func (l *Layer) Format(ctx context.Context) (Format, error) {
	l.formatOnce.Do(func() {
		if idx := l.loadedIndex(ctx); idx != nil {
			l.format = idx.Format // persisted: no blob read
			return
		}
		l.format, l.formatErr = detectFormat(ctx, l.blob)
	})
	if l.formatErr != nil {
		err := l.formatErr
		// Don't remember a failure (it may be a cancelled ctx): try again next time.
		l.formatOnce = sync.Once{}
		return 0, fmt.Errorf("layer %s: %w", l.key, err)
	}
	return l.format, nil
}

// Progress is the state of a layer's index, for status files.
type Progress struct {
	// State is "idle" (no index asked for yet), "building", "ready" (built,
	// loaded from disk, or an eStargz TOC read) or "failed: <error>".
	State string `json:"state"`
	// Done is how far into the stored blob the index pass has got: the
	// bytes it read, or for an uncompressed tar, whose pass reads only the
	// headers, the offset of the last header read.
	Done  int64 `json:"done"`
	Total int64 `json:"total"` // blob size
}

// Progress reports the index pass; cheap, never does I/O or waits on it.
func (l *Layer) Progress() Progress {
	s, _ := l.state.Load().(string)
	if s == "" {
		s = "idle"
		if _, ok := l.m.indexes.Peek(l.key); ok || l.sgOpen.Load() {
			s = "ready"
		}
	}
	p := Progress{State: s, Done: l.done.Load(), Total: l.blob.Size()}
	if s == "ready" {
		// A ready index may have come from disk or the TOC with no pass, or
		// its pass may not have counted its last bytes yet: it is all done.
		p.Done = p.Total
	}
	return p
}

// Prefetch gets the layer's index ready in the background and returns at
// once: for an eStargz blob it reads the footer and TOC only (that is its
// index; a pass would fetch the whole blob), otherwise it starts the index
// pass if no index is loaded or being built.
func (l *Layer) Prefetch(ctx context.Context) {
	if _, ok := l.m.indexes.Get(l.key); ok || l.sgOpen.Load() {
		return
	}
	l.mu.Lock()
	if l.building != nil || l.prefetching {
		l.mu.Unlock()
		return
	}
	l.prefetching = true
	l.mu.Unlock()
	jctx, cancel := l.m.jobContext(ctx)
	go func() {
		defer cancel()
		// A failed check starts the pass anyway: it meets the same error
		// and records it as the layer's state, where status files show it.
		if sg, err := l.stargz(jctx); err != nil || sg == nil {
			l.startBuild(jctx)
		}
		l.mu.Lock()
		l.prefetching = false
		l.mu.Unlock()
	}()
}

func (l *Layer) startBuild(ctx context.Context) *build {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.building != nil {
		return l.building
	}
	if idx, ok := l.m.indexes.Peek(l.key); ok {
		// Built or loaded since the caller looked (Prefetch looks before
		// its eStargz check, which takes a round trip): no second pass.
		b := &build{done: make(chan struct{}), idx: idx}
		close(b.done)
		return b
	}
	b := &build{done: make(chan struct{})}
	l.building = b
	l.state.Store("building")
	l.done.Store(0)
	jctx, cancel := l.m.jobContext(ctx)
	go func() {
		defer cancel()
		b.idx, b.err = l.loadOrBuild(jctx)
		l.mu.Lock()
		l.building = nil
		l.lastErr = b.err
		if b.err != nil {
			l.state.Store("failed: " + b.err.Error())
		} else {
			l.m.indexes.Add(l.key, b.idx)
			l.state.Store("ready")
		}
		l.mu.Unlock()
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

// loadedIndex returns the index if it is in memory or persisted, without
// reading the blob or waiting for a pass.
func (l *Layer) loadedIndex(ctx context.Context) *layerIndex {
	if idx, ok := l.m.indexes.Get(l.key); ok {
		return idx
	}
	if l.m.store == nil || l.noDiskIndex.Load() {
		return nil
	}
	idx, err := l.m.loadIndex(ctx, l.key)
	if idx == nil && (err == nil || errors.Is(err, errBadIndexFile)) {
		l.noDiskIndex.Store(true) // until a pass saves one
	}
	if idx == nil {
		return nil // a failed read (a cancelled ctx) is tried again next time
	}
	l.m.indexes.Add(l.key, idx)
	return idx
}

func (l *Layer) loadOrBuild(ctx context.Context) (*layerIndex, error) {
	if idx := l.loadedIndex(ctx); idx != nil {
		return idx, nil
	}
	idx, err := l.buildIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("index layer %s: %w", l.key, err)
	}
	if err := l.m.saveIndex(ctx, l.key, idx); err != nil {
		l.m.opts.Logger.WithError(err).WithField("layer", l.key).Warn("index not saved: it is rebuilt on next use")
	} else {
		l.noDiskIndex.Store(false)
	}
	return idx, nil
}

// TarSize returns the size of the uncompressed tar stream. For compressed
// blobs the first call waits for the index pass (one pass over the blob).
func (l *Layer) TarSize(ctx context.Context) (int64, error) {
	f, err := l.Format(ctx)
	if err != nil {
		return 0, err
	}
	if f == FormatTar {
		return l.blob.Size(), nil
	}
	idx, err := l.index(ctx)
	if err != nil {
		return 0, err
	}
	return idx.TarSize, nil
}
