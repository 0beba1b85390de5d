package layerindex

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/regfs/regfs/blobio"
)

// ErrPublishedMismatch means a published index said something about an
// entry that the layer's tar does not: the index is dropped for the
// Manager's life and the layer is indexed by its own pass.
var ErrPublishedMismatch = errors.New("published index does not match the layer")

// publishedState is a layer's published index: fetched once (a failed
// fetch is retried only after a cancelled one), dropped for good when an
// entry does not match the tar.
type publishedState struct {
	got     retryOnce[*publishedIndex] // nil value: none published, or refused
	dropped atomic.Bool
}

// publishedIndex is an index someone else built and published. It serves
// the layer's entries and the restart points of its files, each file
// checked against the tar before its first byte is served.
type publishedIndex struct {
	l          *Layer
	idx        *layerIndex // its checkpoints without their windows
	src        blobio.ReaderAt
	windowOffs []int64  // where each checkpoint's window lies in src
	windows    sync.Map // checkpoint number → []byte, fetched
	verified   sync.Map // *Entry → struct{}: headers (and content) checked
}

// window returns checkpoint i's window, fetched from the published index
// the first time.
func (p *publishedIndex) window(ctx context.Context, i int) ([]byte, error) {
	if w, ok := p.windows.Load(i); ok {
		return w.([]byte), nil
	}
	end := p.src.Size()
	if i+1 < len(p.windowOffs) {
		end = p.windowOffs[i+1]
	}
	w := make([]byte, end-p.windowOffs[i])
	if err := readFull(ctx, p.src, w, p.windowOffs[i]); err != nil {
		return nil, fmt.Errorf("layer %s: checkpoint %d: %w", p.l.key, i, err)
	}
	p.windows.Store(i, w)
	return w, nil
}

// published returns the layer's published index, nil if it has none, it
// was dropped, or the layer is not plain gzip (Format read first).
func (l *Layer) published(ctx context.Context) *publishedIndex {
	if l.lopts.Published == nil || l.pub.dropped.Load() {
		return nil
	}
	p, err := l.pub.got.get(ctx, l.fetchPublished)
	if err != nil || l.pub.dropped.Load() {
		return nil // a cancelled fetch is tried again by the next caller
	}
	return p
}

// fetchPublished fetches and parses the published index. Only a cancelled
// ctx is an error; anything else (none published, a refused index, a
// registry error) is logged and means none.
func (l *Layer) fetchPublished(ctx context.Context) (*publishedIndex, error) {
	if f, err := l.Format(ctx); err != nil || f != FormatGzip {
		return nil, err
	}
	log := l.m.opts.Logger.WithField("layer", l.key)
	src, err := l.lopts.Published(ctx)
	if err == nil && src != nil {
		p := &publishedIndex{l: l, src: src}
		p.idx, p.windowOffs, err = readPublished(ctx, src, l.key, l.blob.Size(), l.m.opts.MaxEntries)
		if err == nil {
			// The layer keeps it until dropped: charged, never given back
			// (as an eStargz TOC).
			if err := l.m.charge(indexCost(p.idx), "published index of layer "+l.key); err != nil {
				l.logBudgetOnce(err)
				return nil, nil
			}
			p.idx.Tar.finishChildren()
			log.WithField("bytes", src.Size()).Debug("using the published index")
			return p, nil
		}
	}
	if err == nil {
		return nil, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	log.WithError(err).Warn("published index not used: indexing the layer itself")
	return nil, nil
}

// current reports whether a published index is in use: fetched, not dropped.
func (s *publishedState) current() bool { return s.inUse() != nil }

// inUse returns the published index if one was fetched and not dropped;
// it never fetches.
func (s *publishedState) inUse() *publishedIndex {
	if p, ok := s.got.peek(); ok && p != nil && !s.dropped.Load() {
		return p
	}
	return nil
}

// dropPublished stops using the published index after cause (logged once)
// and starts the layer's own index pass.
func (l *Layer) dropPublished(ctx context.Context, cause error) {
	if !l.pub.dropped.CompareAndSwap(false, true) {
		return
	}
	l.m.opts.Logger.WithField("layer", l.key).WithError(cause).Error("published index dropped for this mount: indexing the layer itself")
	l.startBuild(ctx)
}

// PublishedDropped reports whether the layer's published index was found
// wrong and dropped: entries taken from it before are stale.
func (l *Layer) PublishedDropped() bool { return l.pub.dropped.Load() }

// UsesPublished reports whether a published index serves the layer now.
func (l *Layer) UsesPublished() bool { return l.pub.current() }

// ErrNothingToPublish is PublishedIndex's answer for a layer that needs no
// published index: not gzip (uncompressed and zstd:chunked layers restart
// anywhere or carry their own TOC), or eStargz (its TOC is its index).
var ErrNothingToPublish = errors.New("no index to publish")

// PublishedIndex returns the layer's index in the published format (the
// persisted one, made for the blob's key): the local index, loaded or
// built by a pass, never a published one. Only plain gzip layers have one
// (ErrNothingToPublish).
func (l *Layer) PublishedIndex(ctx context.Context) ([]byte, error) {
	if f, err := l.Format(ctx); err != nil {
		return nil, err
	} else if f != FormatGzip {
		return nil, fmt.Errorf("layer %s: %v: %w", l.key, f, ErrNothingToPublish)
	}
	if sg, err := l.stargz(ctx); err != nil {
		return nil, err
	} else if sg != nil {
		return nil, fmt.Errorf("layer %s: eStargz: %w", l.key, ErrNothingToPublish)
	}
	idx, err := l.index(ctx)
	if err != nil {
		return nil, err
	}
	return encodePublished(l.key, idx)
}

// openFile opens e, an entry of the published index. Nothing is served
// until the entry (and each hardlink on the way to its data) was checked
// against the tar: its headers parse to the same entry at the same
// offsets, and a regular file's content hashes to ContentSHA256.
func (p *publishedIndex) openFile(ctx context.Context, e *Entry) (blobio.ReaderAt, error) {
	chain := []*Entry{e}
	t, err := p.idx.Tar.Resolve(e)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", p.l.key, err)
	}
	for x := e; x.Type == tar.TypeLink && len(chain) <= maxLinkHops; {
		var ok bool
		if x, ok = p.idx.Tar.Lookup(x.Linkname); !ok {
			break
		}
		chain = append(chain, x)
	}
	if t.Type != tar.TypeReg {
		return nil, fmt.Errorf("layer %s: open %q: not a regular file (type %q)", p.l.key, e.Name, t.Type)
	}
	if t.Offset < 0 {
		return nil, fmt.Errorf("layer %s: open %q: %w", p.l.key, e.Name, errNotAddressable)
	}
	dec, err := p.newDecoding(ctx, t)
	if err != nil {
		return nil, err
	}
	return &publishedFile{p: p, chain: chain, t: t, dec: dec}, nil
}

func (p *publishedIndex) newDecoding(ctx context.Context, e *Entry) (*decoding, error) {
	l := p.l
	shadow := &Layer{m: l.m, key: l.key + "#published", blob: l.blob, lopts: l.lopts}
	shadow.format.done, shadow.format.val = true, FormatGzip
	idx := &layerIndex{Format: FormatGzip, TarSize: p.idx.TarSize}
	if i := lastCheckpointAt(p.idx.Checkpoints, e.HeaderOff); i >= 0 {
		w, err := p.window(ctx, i)
		if err != nil {
			return nil, err
		}
		cp := p.idx.Checkpoints[i]
		cp.Window = w
		idx.Checkpoints = []checkpoint{cp}
	}
	return &decoding{shadow: shadow, owner: &TarReader{l: shadow}, idx: idx}, nil
}
