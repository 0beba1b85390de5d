package layerindex

import (
	"context"

	"fmt"
	"github.com/regfs/regfs/blobio"
	"maps"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sirupsen/logrus"
)

// Options configure a Manager. The zero value works: no persistence, 1 MiB
// reads, 2 MiB checkpoint spacing, 64 loaded indexes, 64 MiB of decoded
// spans, logs to logrus's standard logger.
type Options struct {
	// Store keeps persisted indexes (normally the layercache.Cache, whose
	// disk tier counts them against its bound). Nil: files under Dir.
	Store FileStore
	// Dir holds persisted indexes, one file per blob key, when Store is
	// nil; "" (and no Store) keeps them in memory only. Created if missing.
	Dir string
	// ReadSize is the span read from a blob at a time on sequential passes,
	// and the alignment of those reads. It must equal the block size of the
	// cache behind the layers' Blobs (the wiring derives it from the cache),
	// so each read is whole cache blocks. Default 1 MiB.
	ReadSize int64
	// Spacing is the uncompressed distance between gzip checkpoints; a read
	// at a random offset inflates at most this much before its first byte.
	// Default 2 MiB.
	Spacing int64
	// MaxIndexes bounds how many built indexes stay in memory. Default 64.
	MaxIndexes int
	// MaxEntries bounds the entries of one layer's index; a tar with more
	// fails to index. Default 1,000,000.
	MaxEntries int
	// MaxIndexBytes bounds the memory, estimated, of all the Manager's
	// indexes together (every layer of a mount): tar entries, gzip
	// checkpoints, zstd frames, eStargz TOCs. To make room idle indexes
	// are dropped from memory (they are persisted); an index that still
	// does not fit fails with ErrIndexMemory, logged once per layer.
	// Default 512 MiB (about 1.5 million entries); negative: no bound.
	MaxIndexBytes int64
	// BuildTimeout bounds one index pass, which runs detached from the
	// callers that wait for it. Default 30 minutes.
	BuildTimeout time.Duration
	// SpanCacheBytes bounds the decoded spans kept, across all layers, for
	// blobs that can't restart near a read (a zstd blob in one big frame).
	// The index pass of such a blob keeps its first SpanCacheBytes/2.
	// Default 64 MiB; negative keeps none.
	SpanCacheBytes int64
	// MaxCursors bounds the decoders reading layers' tar streams at once,
	// across all layers (each holds up to about 3 MiB plus Options.ReadSize:
	// its recent output, a span of the blob, the decoder's state); more
	// concurrent readers wait for one. Default 16.
	MaxCursors int
	// Logger gets one line per failure that is not returned to a caller
	// (an index or TOC that could not be saved: it is rebuilt next time).
	// Default logrus.StandardLogger().
	Logger logrus.FieldLogger
}

const (
	defaultSpacing      = 2 << 20
	defaultMaxIndexes   = 64
	defaultBuildTimeout = 30 * time.Minute
	defaultMaxEntries   = 1_000_000
	defaultMaxIndexMem  = 512 << 20
	defaultSpanCache    = 64 << 20
	defaultMaxCursors   = 16
	maxCachedChunks     = 16 // eStargz chunks are up to 4 MiB by default
)

// Manager hands out one shared Layer per blob key and keeps their indexes:
// a bounded LRU in memory, then files under Options.Dir.
type Manager struct {
	opts    Options
	store   FileStore // persisted indexes; nil: none
	budget  indexBudget
	mu      sync.Mutex
	layers  map[string]*Layer
	indexes *lru.Cache[string, *layerIndex]
	chunks  *lru.Cache[chunkKey, []byte] // verified eStargz chunks
	spans   *spanCache                   // decoded spans; nil when disabled
	cursors *cursorPool
}

// NewManager returns a Manager; it does no I/O until a layer is used.
func NewManager(opts Options) (*Manager, error) {
	if opts.ReadSize <= 0 {
		opts.ReadSize = defaultReadSize
	}
	if opts.Spacing <= 0 {
		opts.Spacing = defaultSpacing
	}
	if opts.MaxIndexes <= 0 {
		opts.MaxIndexes = defaultMaxIndexes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = defaultMaxEntries
	}
	if opts.BuildTimeout <= 0 {
		opts.BuildTimeout = defaultBuildTimeout
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	if opts.MaxCursors <= 0 {
		opts.MaxCursors = defaultMaxCursors
	}
	if opts.MaxIndexBytes == 0 {
		opts.MaxIndexBytes = defaultMaxIndexMem
	}
	chunks, err := lru.New[chunkKey, []byte](maxCachedChunks)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	m := &Manager{opts: opts, layers: map[string]*Layer{}, chunks: chunks, store: opts.Store,
		cursors: newCursorPool(opts.MaxCursors), budget: indexBudget{limit: opts.MaxIndexBytes}}
	if m.indexes, err = lru.NewWithEvict[string, *layerIndex](opts.MaxIndexes, m.dropped); err != nil {
		return nil, fmt.Errorf("index cache: %w", err)
	}
	if m.store == nil && opts.Dir != "" {
		m.store = dirStore{opts.Dir}
	}
	if opts.SpanCacheBytes == 0 {
		m.opts.SpanCacheBytes = defaultSpanCache
	}
	if m.spans, err = newSpanCache(m.opts.SpanCacheBytes); err != nil {
		return nil, err
	}
	return m, nil
}

// LayerOptions describe one blob beyond its bytes.
type LayerOptions struct {
	// TOCDigest is the eStargz TOC digest from the layer descriptor's
	// "containerd.io/snapshot/stargz/toc.digest" annotation, if any. With it
	// the TOC is verified; without it an eStargz footer is still detected
	// and each chunk is checked against the TOC's chunk digests.
	TOCDigest string
	// ZstdChunkedChecksum and ZstdChunkedPosition are the zstd:chunked
	// annotations of the layer descriptor (ZstdChunkedChecksumAnnotation,
	// ZstdChunkedPositionAnnotation), if any. The position saves reading
	// the footer; with the checksum the TOC is verified. Without them a
	// zstd:chunked footer is still detected, and each chunk is checked
	// against the TOC's digests either way.
	ZstdChunkedChecksum string
	ZstdChunkedPosition string
	// StoreKey names the files the layer's index is persisted under
	// (Options.Store); "" means the Layer's key. The cache gives bytes not
	// verified yet a key of their own origin (layercache.KeyOf): an index
	// derived from them must not be found under the bare digest.
	StoreKey string
	// Published opens the index published for this blob in its registry
	// (PublishedIndex's bytes, read in ranges: the payload, then the
	// windows of the checkpoints reads start at), nil and no error when
	// there is none. A plain gzip layer with no local index asks it once,
	// before its first index pass; what it holds is untrusted: bounded
	// like a hostile tar, and every file checked against the tar before it
	// is served. Nil: never asked.
	Published func(ctx context.Context) (blobio.ReaderAt, error)
}

// Layer returns the shared Layer for key (the blob digest). The blob and
// options of the first call for a key are kept; later calls get the same
// Layer. It does no I/O.
func (m *Manager) Layer(key string, blob Blob, lo LayerOptions) *Layer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.layers[key]; ok {
		return l
	}
	l := &Layer{m: m, key: key, blob: blob, lopts: lo}
	m.layers[key] = l
	return l
}

// EStargzTOCAnnotation is the layer descriptor annotation holding the TOC digest.
const EStargzTOCAnnotation = "containerd.io/snapshot/stargz/toc.digest"

// contextWithoutCancel detaches a shared job from the caller that started
// it, keeping its values, and bounds it on its own.
func (m *Manager) jobContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.opts.BuildTimeout)
}

// Progress returns the index progress of every layer the Manager has
// handed out, by key. Cheap: no I/O, no waiting on a pass.
func (m *Manager) Progress() map[string]Progress {
	m.mu.Lock()
	layers := maps.Clone(m.layers)
	m.mu.Unlock()
	out := make(map[string]Progress, len(layers))
	for k, l := range layers {
		out[k] = l.Progress()
	}
	return out
}
