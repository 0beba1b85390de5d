package layerindex

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Layer is one blob's uncompressed views. Get it from Manager.Layer; it is
// safe for concurrent use and shared by everything that reads the blob.
//
// Its parts: the index pass (build, build.go), the pass's output shared
// with TarReaders (share, passshare.go), the eStargz TOC (sgState,
// estargz.go), the zstd:chunked TOC (zcState, zstdchunked.go); decoding restarts through a decoder (decoder.go) and runs
// on cursors from the Manager's pool (cursor.go, cursorpool.go).
type Layer struct {
	m     *Manager
	key   string
	blob  Blob
	lopts LayerOptions

	format retryOnce[Format] // how the blob is stored, once read

	build        indexBuild
	share        passSharing
	sgState      stargzState
	zcState      zstdChunkedState
	pub          publishedState
	noDiskIndex  atomic.Bool // no persisted index was found
	budgetLogged atomic.Bool // logBudgetOnce logged
}

// Key returns the blob key this Layer was made for.
func (l *Layer) Key() string { return l.key }

// storeKey is the key its persisted files are named by: LayerOptions.StoreKey.
func (l *Layer) storeKey() string {
	if l.lopts.StoreKey != "" {
		return l.lopts.StoreKey
	}
	return l.key
}

// Format returns how the blob is stored, read from its first bytes. A
// failure (a cancelled ctx, a registry error) is not remembered: the next
// call reads again.
func (l *Layer) Format(ctx context.Context) (Format, error) {
	f, err := l.format.get(ctx, func(ctx context.Context) (Format, error) {
		if idx := l.loadedIndex(ctx); idx != nil {
			return idx.Format, nil // persisted: no blob read
		}
		return detectFormat(ctx, l.blob)
	})
	if err != nil {
		return 0, fmt.Errorf("layer %s: %w", l.key, err)
	}
	return f, nil
}

// source is what the layer's decoders read.
func (l *Layer) source() blobSource {
	return blobSource{key: l.key, blob: l.blob, readSize: l.m.opts.ReadSize}
}

// decoderFor returns the layer's decoder with the restart points of idx
// (nil: none). The format must be known: Format returned without error.
func (l *Layer) decoderFor(idx *layerIndex) decoder {
	f, ok := l.format.peek()
	if !ok {
		f = -1 // not known: a decoder whose every open fails, never a guess
	}
	return newDecoder(f, l.source(), idx)
}

// Prefetch gets the layer's index ready in the background and returns at
// once: for an eStargz or zstd:chunked blob it reads the footer and TOC
// only (that is its index; a pass would fetch the whole blob), otherwise it starts the index
// pass if no index is loaded or being built.
func (l *Layer) Prefetch(ctx context.Context) {
	if _, ok := l.m.indexes.Get(l.key); ok || l.sgState.opened.Load() || l.zcState.opened.Load() {
		return
	}
	if !l.build.beginPrefetch() {
		return
	}
	jctx, cancel := l.m.jobContext(ctx)
	go func() {
		defer cancel()
		// A failed check starts the pass anyway: it meets the same error
		// and records it as the layer's state, where status files show it.
		if sg, err := l.stargz(jctx); err != nil || sg == nil {
			if zc, err := l.zstdChunked(jctx); err != nil || zc == nil {
				if l.loadedIndex(jctx) != nil || l.published(jctx) == nil {
					l.startBuild(jctx)
				}
			}
		}
		l.build.endPrefetch()
	}()
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
	idx, err := l.m.loadIndex(ctx, l.storeKey())
	if idx != nil {
		if err = idx.check(l.blob.Size()); err != nil {
			idx = nil
		} else if idx.Tar != nil {
			idx.Tar.finishChildren()
		}
	}
	if idx == nil && (err == nil || errors.Is(err, errBadIndexFile)) {
		l.noDiskIndex.Store(true) // until a pass saves one
	}
	if idx == nil {
		return nil // a failed read (a cancelled ctx) is tried again next time
	}
	idx, _ = l.m.keep(l.key, idx) // not kept if over budget: used, and loaded again next time
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
	if err := l.m.saveIndex(ctx, l.storeKey(), idx); err != nil {
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
