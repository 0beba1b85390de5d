package session

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/metastore"
	"github.com/regfs/regfs/registry"
)

// Options wire a Session.
type Options struct {
	// Client is the registry; required.
	Client registry.Client
	// Cache serves blob bytes by block. Nil reads every blob directly from
	// the registry, one ranged request per read: fs's node tests use it to
	// see the tree's own requests. The Session does not close it.
	Cache *layercache.Cache
	// Index configures the layer index manager. Leave ReadSize 0: with a
	// Cache it is the cache's block size (index passes then read whole
	// blocks); without, layerindex's default.
	Index layerindex.Options
	// IndexReads is how a layer's index reads its blob through Cache: the
	// reader made for it lives as long as the Session's index manager
	// keeps the layer. Default: a plain Reader (layercache.OpenOptions{}).
	IndexReads layercache.OpenOptions
	// DetachIndexBuilds makes Image.Rootfs start each layer's index in the
	// background (layerindex.Layer.Prefetch) before waiting for them, so a
	// pass goes on when the caller's context ends: a mount wants that (a
	// timed-out FUSE operation must not stop a pass the next one waits
	// for); a prefetch does not (an interrupt stops everything).
	DetachIndexBuilds bool
	// Meta, when set, records what the registry says about names and
	// serves it while the registry is unreachable: Client then returns a
	// client that answers tags, tag lists and the catalog from Meta's
	// records when the registry cannot be reached (offline.go). Give the
	// same store to the registry client as registry.Options.Content, so
	// digests resolve from it without asking the registry. Default nil:
	// Client is Options.Client itself.
	Meta *metastore.Store
	// PublishedIndexes makes a gzip layer look for an index published for
	// it in the image's own repository (an OCI referrer of the image
	// manifest, PublishIndexes) before its first index pass, so its first
	// reads need no pass. Default false.
	PublishedIndexes bool
	// PublishedTTL is how long one image's referrers answer (found or
	// not, or failed) is kept; the mount's tag TTL. Default 30s.
	PublishedTTL time.Duration
	// Log receives the offline notes (the first stale answer of an outage
	// at warn). Default: logrus's standard logger.
	Log logrus.FieldLogger
}

// Session is the parts wired once and the handles given out so far. Safe
// for concurrent use.
type Session struct {
	meta       *metastore.Store
	client     registry.Client
	raw        registry.Client  // Options.Client: the registry itself, for artifacts
	published  *publishedLookup // nil: published indexes off
	cache      *layercache.Cache
	index      *layerindex.Manager
	indexReads layercache.OpenOptions
	detach     bool

	mu      sync.Mutex // taken after a Layer's mu, never before
	layers  map[layerKey]*Layer
	images  map[string]*Image
	indexes map[string]*layerindex.Layer // by blob key
}

type layerKey struct{ repo, id, digest string }

// New wires a Session; it does no I/O.
func New(o Options) (*Session, error) {
	if o.Client == nil {
		return nil, errors.New("session: Options.Client is required")
	}
	if o.Cache != nil {
		if o.Index.ReadSize != 0 && o.Index.ReadSize != o.Cache.BlockSize() {
			return nil, fmt.Errorf("session: index read size %d differs from the cache's block size %d", o.Index.ReadSize, o.Cache.BlockSize())
		}
		o.Index.ReadSize = o.Cache.BlockSize()
	}
	index, err := layerindex.NewManager(o.Index)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	client := o.Client
	if o.Meta != nil {
		if o.Log == nil {
			o.Log = logrus.StandardLogger()
		}
		client = &offlineClient{Client: o.Client, meta: o.Meta, log: o.Log, now: time.Now}
	}
	var published *publishedLookup
	if a, ok := registry.AsArtifacts(o.Client); ok && o.PublishedIndexes {
		if o.PublishedTTL <= 0 {
			o.PublishedTTL = 30 * time.Second
		}
		published = &publishedLookup{client: a, blobs: o.Client, ttl: o.PublishedTTL, now: time.Now, images: map[string]*publishedImage{}}
	}
	return &Session{
		meta:   o.Meta,
		client: client, raw: o.Client, published: published, cache: o.Cache, index: index, indexReads: o.IndexReads, detach: o.DetachIndexBuilds,
		layers: map[layerKey]*Layer{}, images: map[string]*Image{}, indexes: map[string]*layerindex.Layer{},
	}, nil
}

// Client is the registry client: with Options.Meta, one that serves
// recorded answers while the registry is unreachable.
func (s *Session) Client() registry.Client { return s.client }

// Meta is the metadata store of Options.Meta, nil without one.
func (s *Session) Meta() *metastore.Store { return s.meta }

// Cache is the block cache; nil when the Session reads blobs directly.
func (s *Session) Cache() *layercache.Cache { return s.cache }

// Indexes is the layer index manager (its Progress shows every layer's).
func (s *Session) Indexes() *layerindex.Manager { return s.index }

// Layer returns the shared handle on layer l of repository repo: one per
// repository, layer ID and digest for the Session's life, so what one
// reader learned (the blob handle, the index) serves the next. No I/O.
func (s *Session) Layer(repo string, l registry.Layer) *Layer {
	k := layerKey{repo, l.ID, l.Digest.String()}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.layers[k]
	if !ok {
		h = &Layer{s: s, repo: repo, desc: l}
		s.layers[k] = h
	}
	return h
}

// layerIndex returns the index of blob b, one per blob key: the first
// caller's cache reader serves it for the Session's life, and a later
// handle on the same blob opens none. Its persisted files are named by the
// cache's key (the blob key qualified by its registry host): an index is
// derived from bytes not verified yet, so it must not serve another
// registry.
func (s *Session) layerIndex(b blobio.Source, lo layerindex.LayerOptions) *layerindex.Layer {
	key := b.Key()
	lo.StoreKey = layercache.KeyOf(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ix, ok := s.indexes[key]; ok {
		return ix
	}
	src := layerindex.UncachedBlob(b)
	if s.cache != nil {
		src = s.cache.OpenWith(b, s.indexReads)
	}
	ix := s.index.Layer(key, src, lo)
	s.indexes[key] = ix
	return ix
}

// Image returns the shared handle on img, known to the caller as key (a
// stable identity of the image, such as its manifest digest): the first
// call's img is kept for the key. No I/O.
func (s *Session) Image(key string, img *registry.Image) *Image {
	layers := make([]*Layer, len(img.Layers))
	for i, l := range img.Layers {
		layers[i] = s.Layer(img.Repository, l) // takes s.mu itself
		layers[i].offerPublished(s.publishedFor(img, l))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if im, ok := s.images[key]; ok {
		return im
	}
	im := &Image{s: s, img: img, layers: layers}
	s.images[key] = im
	return im
}
