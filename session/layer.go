package session

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// ErrNoCache is returned by Layer.Reader when the Session has no block cache.
var ErrNoCache = errors.New("session: no block cache")

// Layer is one layer of one repository as every reader of it shares it:
// its blob handle (opened once; a failed open is retried by the next
// caller) and its layer index. Safe for concurrent use.
type Layer struct {
	s    *Session
	repo string
	desc registry.Layer

	mu        sync.Mutex
	blob      blobio.Source     // nil until opened
	ix        *layerindex.Layer // nil until Index
	published func(context.Context) (blobio.ReaderAt, error)
}

// offerPublished sets where the layer's published index comes from (the
// first image it is reached through), unless it has one or its index was
// made already.
func (l *Layer) offerPublished(f func(context.Context) (blobio.ReaderAt, error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.published == nil && l.ix == nil {
		l.published = f
	}
}

// Repository is the repository the layer was reached through.
func (l *Layer) Repository() string { return l.repo }

// Descriptor is the layer as the image lists it.
func (l *Layer) Descriptor() registry.Layer { return l.desc }

// Blob returns the layer's blob handle, opening it on first use.
func (l *Layer) Blob(ctx context.Context) (blobio.Source, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blob != nil {
		return l.blob, nil
	}
	b, err := l.s.client.OpenBlob(ctx, l.repo, l.desc)
	if err != nil {
		return nil, fmt.Errorf("open blob of layer %s: %w", l.desc.ID, err)
	}
	l.blob = b
	return b, nil
}

// Size is the blob's stored size: from the image's listing, or from the
// registry when the listing did not say (v1 without X-Docker-Size).
func (l *Layer) Size(ctx context.Context) (int64, error) {
	if l.desc.Size >= 0 {
		return l.desc.Size, nil
	}
	b, err := l.Blob(ctx)
	if err != nil {
		return 0, err
	}
	return b.Size(), nil
}

// Reader opens a reader of the blob's stored bytes through the block cache,
// tuned by o, for one consumer (its own readahead state); close it when
// done. ErrNoCache without a cache: read Blob then.
func (l *Layer) Reader(ctx context.Context, o layercache.OpenOptions) (*layercache.Reader, error) {
	if l.s.cache == nil {
		return nil, ErrNoCache
	}
	b, err := l.Blob(ctx)
	if err != nil {
		return nil, err
	}
	return l.s.cache.OpenWith(b, o), nil
}

// Index returns the layer's uncompressed view, shared by blob key in the
// Session's index manager. It reads the blob through the cache with
// Options.IndexReads (directly without a cache).
func (l *Layer) Index(ctx context.Context) (*layerindex.Layer, error) {
	b, err := l.Blob(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ix == nil {
		l.ix = l.s.layerIndex(b, layerindex.LayerOptions{
			TOCDigest:           l.desc.Annotations[layerindex.EStargzTOCAnnotation],
			ZstdChunkedChecksum: l.desc.Annotations[layerindex.ZstdChunkedChecksumAnnotation],
			ZstdChunkedPosition: l.desc.Annotations[layerindex.ZstdChunkedPositionAnnotation],
			Published:           l.published,
		})
	}
	return l.ix, nil
}

// OpenedIndex is the layer's index if Index has made it, else nil; no I/O.
func (l *Layer) OpenedIndex() *layerindex.Layer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ix
}
