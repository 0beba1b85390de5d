package fs

// The metadata cache sits here, at the top of the one-way flow (fs →
// registry), as a registry.Client decorator: the nodes ask it exactly what
// they would ask the registry. Blob bytes never pass through it (layercache
// holds those). What it keeps:
//   - Resolve by digest: forever (bounded by entry count, LRU), since the
//     bytes behind a digest never change;
//   - Resolve by tag, Tags, Catalog: for the tag TTL;
//   - "not found" answers: for the tag TTL (a name may be pushed later);
//   - listings stopped at their bounds: for the tag TTL (each try walks
//     thousands of pages);
//   - nothing else: other errors are retried by the next caller.
// With the registry unreachable, the client below (session's) answers tags
// and listings from its records; those answers are kept here for the tag
// TTL like any other, so the registry is asked again when it expires.
// Concurrent identical requests share one fetch, run detached from any one
// caller under its own timeout, so an interrupted caller stops waiting
// without failing the others.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/regfs/regfs/registry"
)

const metaCacheEntries = 4096

type metaEntry struct {
	val     any
	err     error
	expires time.Time // zero: never
}

type metaCache struct {
	registry.Client
	ttl          time.Duration
	fetchTimeout time.Duration
	now          func() time.Time
	entries      *lru.Cache[string, metaEntry]
	flights      singleflight.Group

	liveMu sync.Mutex
	live   map[string]*liveList // listings being fetched, by key
}

func newMetaCache(c registry.Client, ttl, fetchTimeout time.Duration) *metaCache {
	entries, _ := lru.New[string, metaEntry](metaCacheEntries) // errors only for size <= 0
	return &metaCache{Client: c, ttl: ttl, fetchTimeout: fetchTimeout, now: time.Now, entries: entries, live: map[string]*liveList{}}
}

// peek returns a fresh cached answer without fetching.
func (m *metaCache) peek(key string) (metaEntry, bool) {
	e, ok := m.entries.Get(key)
	if !ok {
		return metaEntry{}, false
	}
	if !e.expires.IsZero() && !m.now().Before(e.expires) {
		m.entries.Remove(key)
		return metaEntry{}, false
	}
	return e, true
}

// get answers key from the cache or runs fetch once for all concurrent
// callers. immutable answers are kept forever.
func (m *metaCache) get(ctx context.Context, key string, immutable bool, fetch func(context.Context) (any, error)) (any, error) {
	if e, ok := m.peek(key); ok {
		return e.val, e.err
	}
	ch := m.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.fetchTimeout)
		defer cancel()
		v, err := fetch(fctx)
		switch {
		case err == nil:
			e := metaEntry{val: v}
			if !immutable {
				e.expires = m.now().Add(m.ttl)
			}
			m.entries.Add(key, e)
		case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrListTooLong):
			m.entries.Add(key, metaEntry{err: err, expires: m.now().Add(m.ttl)})
		}
		return v, err
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for %s: %w", key, ctx.Err())
	}
}

// list is listing key (a catalog or tag list): its fresh cached answer,
// or its fetch, started now unless one is under way, which a directory
// listing can follow page by page. The fetch is detached from any caller,
// as get's are.
func (m *metaCache) list(key, what string, fetch func(context.Context) ([]string, error)) *liveList {
	if e, ok := m.peek(key); ok {
		all, _ := e.val.([]string)
		return wholeList(what, all, e.err)
	}
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	if l := m.live[key]; l != nil {
		return l
	}
	l := newLiveList(what)
	m.live[key] = l
	go func() {
		v, err := m.get(context.Background(), key, false, func(ctx context.Context) (any, error) {
			return fetch(registry.WithListPages(ctx, l.addPage))
		})
		all, _ := v.([]string)
		m.liveMu.Lock()
		delete(m.live, key)
		m.liveMu.Unlock()
		l.finish(all, err)
	}()
	return l
}

func (m *metaCache) catalogList() *liveList {
	return m.list("catalog", "catalog", m.Client.Catalog)
}

func (m *metaCache) Catalog(ctx context.Context) ([]string, error) {
	return m.catalogList().wait(ctx)
}

// cachedCatalog is the catalog if it is cached and fresh.
func (m *metaCache) cachedCatalog() ([]string, bool) {
	e, ok := m.peek("catalog")
	if !ok || e.err != nil {
		return nil, false
	}
	return e.val.([]string), true
}

func (m *metaCache) tagList(repo string) *liveList {
	return m.list("tags\x00"+repo, "tags of "+repo, func(ctx context.Context) ([]string, error) {
		return m.Client.Tags(ctx, repo)
	})
}

func (m *metaCache) Tags(ctx context.Context, repo string) ([]string, error) {
	return m.tagList(repo).wait(ctx)
}

// cachedTag reports whether the fresh cached tag list of repo names tag.
func (m *metaCache) cachedTag(repo, tag string) bool {
	e, ok := m.peek("tags\x00" + repo)
	if !ok || e.err != nil {
		return false
	}
	_, found := slices.BinarySearch(e.val.([]string), tag)
	return found
}

func resolveKey(repo, ref string, p registry.Platform) string {
	return "resolve\x00" + repo + "\x00" + ref + "\x00" + p.String()
}

func isDigestRef(ref string) bool { return strings.Contains(ref, ":") }

func (m *metaCache) Resolve(ctx context.Context, repo, ref string, p registry.Platform) (*registry.Image, error) {
	v, err := m.get(ctx, resolveKey(repo, ref, p), isDigestRef(ref), func(ctx context.Context) (any, error) {
		return m.Client.Resolve(ctx, repo, ref, p)
	})
	if err != nil {
		return nil, err
	}
	return v.(*registry.Image), nil
}

// cachedImage is the resolved image if it is cached and fresh.
func (m *metaCache) cachedImage(repo, ref string, p registry.Platform) *registry.Image {
	e, ok := m.peek(resolveKey(repo, ref, p))
	if !ok || e.err != nil {
		return nil
	}
	return e.val.(*registry.Image)
}
