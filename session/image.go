package session

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/rootfs"
)

// Image is one image's layers, base first, and their merged tree. Safe for
// concurrent use.
type Image struct {
	s      *Session
	img    *registry.Image
	layers []*Layer

	mu     sync.Mutex
	merged *rootfs.Merged // nil until Rootfs succeeds
	// fromPublished are the merged layers' indexes that were published
	// ones: when one is dropped (found wrong), the tree is merged again.
	fromPublished []*layerindex.Layer
}

// Descriptor is the image as the registry describes it.
func (im *Image) Descriptor() *registry.Image { return im.img }

// Layers are the image's layers, base first; the slice is shared, do not
// modify it.
func (im *Image) Layers() []*Layer { return im.layers }

// Rootfs returns the image's merged tree, building every layer's index (in
// parallel, each once and shared) the first time; a failure is retried by
// the next call. Index positions in the tree are those of Layers. A tree
// merged from a published index that was dropped since is merged again.
func (im *Image) Rootfs(ctx context.Context) (*rootfs.Merged, error) {
	im.mu.Lock()
	m := im.merged
	for _, ix := range im.fromPublished {
		if ix.PublishedDropped() {
			m = nil
		}
	}
	im.mu.Unlock()
	if m != nil {
		return m, nil
	}
	ixs := make([]*layerindex.Layer, len(im.layers))
	for i, l := range im.layers {
		ix, err := l.Index(ctx)
		if err != nil {
			return nil, fmt.Errorf("layer %d of %d: %w", i+1, len(im.layers), err)
		}
		if im.s.detach {
			ix.Prefetch(ctx)
		}
		ixs[i] = ix
	}
	xs := make([]*layerindex.Index, len(ixs))
	g, gctx := errgroup.WithContext(ctx)
	for i, ix := range ixs {
		g.Go(func() error {
			x, err := ix.Index(gctx)
			if err != nil {
				return fmt.Errorf("layer %d of %d: %w", i+1, len(ixs), err)
			}
			xs[i] = x
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var fromPublished []*layerindex.Layer
	for _, ix := range ixs {
		if ix.UsesPublished() {
			fromPublished = append(fromPublished, ix)
		}
	}
	m = rootfs.Merge(xs)
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.merged == nil || len(im.fromPublished) > 0 {
		im.merged, im.fromPublished = m, fromPublished
	}
	return im.merged, nil
}
