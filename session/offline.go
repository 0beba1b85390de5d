package session

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/metastore"
	"github.com/regfs/regfs/registry"
)

// offlineClient is the registry client a Session hands out when it has a
// metadata store: it records every answer about a name (tag → digest with
// its time, repo@digest) and, while the registry cannot be reached
// (registry.IsUnreachable), answers from those records instead: a tag with
// the digest it named last (however old), the catalog and tag lists with
// the names recorded. Digests resolve from the store's content without
// asking the registry at all (registry.Options.Content). No failure is
// remembered: every call asks the registry first, so answers come back
// fresh as soon as it does.
type offlineClient struct {
	registry.Client
	meta *metastore.Store
	log  logrus.FieldLogger
	now  func() time.Time
	// logged holds the kinds of stale answer (their messages) served in
	// this outage, nil while answers are fresh: the first of each kind is
	// logged at warn, the rest at debug.
	mu     sync.Mutex
	logged map[string]bool
}

// stale reports whether recorded answers have been served since the last
// fresh one.
func (c *offlineClient) stale() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logged != nil
}

// networkShare is the part of a caller's remaining time the registry gets
// when a recorded answer could be served instead: a registry that does not
// answer at all (a black hole, not a refusal) must leave time to serve it.
const networkShare = 2

func isDigest(ref string) bool { return strings.Contains(ref, ":") }

// attempt runs f under ctx, or, when a recorded answer exists (fallback),
// under a share of ctx's remaining time. It reports whether a failure
// means the registry is unreachable.
func (c *offlineClient) attempt(ctx context.Context, fallback bool, f func(context.Context) error) (unreachable bool, err error) {
	nctx := ctx
	if dl, ok := ctx.Deadline(); ok && fallback {
		now := c.now()
		var cancel context.CancelFunc
		nctx, cancel = context.WithDeadline(ctx, now.Add(dl.Sub(now)/networkShare))
		defer cancel()
	}
	if err = f(nctx); err == nil {
		c.mu.Lock()
		wasStale := c.logged != nil
		c.logged = nil
		c.mu.Unlock()
		if wasStale {
			c.log.WithField("registry", c.Host()).Info("registry reachable again: answers are fresh")
		}
		return false, nil
	}
	ownTimeout := nctx.Err() != nil && ctx.Err() == nil
	return registry.IsUnreachable(err) || ownTimeout, err
}

// served logs a recorded answer served while the registry is unreachable:
// the first of its kind (msg) in an outage at warn, the others at debug.
func (c *offlineClient) served(msg string, fields logrus.Fields, cause error) {
	c.mu.Lock()
	first := !c.logged[msg]
	if first {
		if c.logged == nil {
			c.logged = map[string]bool{}
		}
		c.logged[msg] = true
	}
	c.mu.Unlock()
	l := c.log.WithFields(fields).WithField("registry", c.Host()).WithError(cause)
	if first {
		l.Warn(msg)
		return
	}
	l.Debug(msg)
}

func (c *offlineClient) Resolve(ctx context.Context, repo, ref string, p registry.Platform) (*registry.Image, error) {
	if isDigest(ref) {
		img, err := c.Client.Resolve(ctx, repo, ref, p)
		if err == nil {
			c.recordDigest(repo, img, ref)
		}
		return img, err
	}
	rec, have := c.meta.Tag(c.Host(), repo, ref)
	var img *registry.Image
	unreachable, err := c.attempt(ctx, have, func(ctx context.Context) error {
		var err error
		img, err = c.Client.Resolve(ctx, repo, ref, p)
		return err
	})
	if err == nil {
		if d := topDigest(img); d != "" {
			c.meta.PutRef(metastore.Ref{Registry: c.Host(), Repository: repo, Tag: ref, Digest: d, Time: c.now()})
		}
		return img, nil
	}
	if !have || !unreachable {
		return nil, err
	}
	old, oerr := c.Client.Resolve(ctx, repo, rec.Digest.String(), p)
	if oerr != nil {
		return nil, fmt.Errorf("%w (the cached answer %s is not servable: %v)", err, rec.Digest, oerr)
	}
	c.served("serving cached tag answer, registry unreachable", logrus.Fields{
		"ref": repo + ":" + ref, "digest": rec.Digest.String(), "answered": rec.Time.Format(time.RFC3339),
	}, err)
	img2 := *old
	img2.Reference = ref
	return &img2, nil
}

// recordDigest notes that repo@ref resolved, for `regfs cache ls`.
func (c *offlineClient) recordDigest(repo string, img *registry.Image, ref string) {
	d, err := digest.Parse(ref)
	if err != nil || topDigest(img) != d || c.meta.HasDigestRef(c.Host(), repo, d) {
		return
	}
	c.meta.PutRef(metastore.Ref{Registry: c.Host(), Repository: repo, Digest: d, Time: c.now()})
}

// topDigest is the digest a reference names: the index's, else the
// manifest's; "" for v1 images, which have neither.
func topDigest(img *registry.Image) digest.Digest {
	if img.IndexDigest != "" {
		return img.IndexDigest
	}
	return img.ManifestDigest
}

// Catalog and Tags read the records only once the registry failed: they
// are a directory scan, and listings are asked often. While answers are
// being served stale the registry gets a share of the caller's time.
func (c *offlineClient) Catalog(ctx context.Context) ([]string, error) {
	var names []string
	unreachable, err := c.attempt(ctx, c.stale(), func(ctx context.Context) error {
		var err error
		names, err = c.Client.Catalog(ctx)
		return err
	})
	if err == nil || !unreachable {
		return names, err
	}
	repos := c.recorded(func(r metastore.Ref) string { return r.Repository })
	if len(repos) == 0 {
		return nil, err
	}
	c.served("serving cached repository list, registry unreachable", logrus.Fields{"repositories": len(repos)}, err)
	return repos, nil
}

func (c *offlineClient) Tags(ctx context.Context, repo string) ([]string, error) {
	var names []string
	unreachable, err := c.attempt(ctx, c.stale(), func(ctx context.Context) error {
		var err error
		names, err = c.Client.Tags(ctx, repo)
		return err
	})
	if err == nil || !unreachable {
		return names, err
	}
	tags := c.recorded(func(r metastore.Ref) string {
		if r.Repository == repo {
			return r.Tag
		}
		return ""
	})
	if len(tags) == 0 {
		return nil, err
	}
	c.served("serving cached tag list, registry unreachable", logrus.Fields{"repo": repo, "tags": len(tags)}, err)
	return tags, nil
}

// recorded lists, sorted and once each, the non-empty names pick finds in
// the records of this registry.
func (c *offlineClient) recorded(pick func(metastore.Ref) string) []string {
	refs, err := c.meta.Refs()
	if err != nil {
		c.log.WithError(err).Debug("metadata store: no records")
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range refs {
		if r.Registry != c.Host() {
			continue
		}
		if n := pick(r); n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
