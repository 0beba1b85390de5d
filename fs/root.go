package fs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sync/errgroup"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// Root is the root directory of a mount: the registry's top-level
// repository path components, and the images of one-component repositories.
type Root struct {
	pathDir
}

// NewRoot builds the tree over opts.Session; it does no I/O.
func NewRoot(opts Options) (*Root, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &tree{
		meta:      newMetaCache(opts.Session.Client(), opts.TagTTL, opts.OpTimeout),
		host:      opts.Session.Client().Host(),
		api:       opts.Session.Client().API(),
		s:         opts.Session,
		platform:  opts.Platform,
		tagTTL:    opts.TagTTL,
		opTimeout: opts.OpTimeout,
		log:       opts.Log,
		status:    opts.Status,
		started:   time.Now(),
		layers:    map[*session.Layer]*layerRef{},
	}
	return &Root{pathDir{t: t}}, nil
}

// pathDir is a repository path prefix (the root has prefix ""): it lists
// the next path components of the catalog's repositories, and beside each
// repository's last component its tags as <component>:<tag>.
type pathDir struct {
	gofs.Inode
	t      *tree
	prefix string
}

var (
	_ = (node)((*pathDir)(nil))
	_ = (gofs.NodeLookuper)((*pathDir)(nil))
	_ = (gofs.NodeReaddirer)((*pathDir)(nil))
	_ = (gofs.NodeGetattrer)((*pathDir)(nil))
)

func (n *pathDir) fill(_ context.Context, a *fuse.Attr) error {
	dirAttr(a, n.t.started)
	return nil
}

// A listing may change, its attributes do not.
func (n *pathDir) attrTTL() time.Duration { return immutableTTL }

func (n *pathDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *pathDir) dirChild(component string) child {
	t, repo := n.t, joinRepo(n.prefix, component)
	return child{
		name: component, mode: fuse.S_IFDIR, ino: inoOf(t.host, "dir", repo), entryTTL: t.tagTTL,
		make: func() node { return &pathDir{t: t, prefix: repo} },
	}
}

func (n *pathDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := n.t
	if n.prefix == "" && name == statusDirName && t.status != nil {
		return t.lookupChild(ctx, &n.Inode, t.statusChild(), out)
	}
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	if in, ok := parseImageName(name); ok {
		return n.lookupImage(ctx, name, in, out)
	}
	if !componentRE.MatchString(name) {
		return nil, syscall.ENOENT
	}
	c := n.dirChild(name)
	// Known already: a path component never stops being one while mounted.
	if ch := n.GetChild(name); ch != nil && ch.StableAttr().Ino == c.ino {
		return t.lookupChild(ctx, &n.Inode, c, out)
	}
	ok, err := n.isRepoPrefix(ctx, joinRepo(n.prefix, name))
	if err != nil {
		return nil, t.errno("lookup", &n.Inode, err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	return t.lookupChild(ctx, &n.Inode, c, out)
}

// isRepoPrefix reports whether repo is a repository or a prefix of one:
// listed by the catalog, or (for names the catalog does not list) a
// repository with tags. A registry without a catalog lists nothing, so every
// well-formed name may be a prefix there.
func (n *pathDir) isRepoPrefix(ctx context.Context, repo string) (bool, error) {
	catalog, err := n.t.meta.Catalog(ctx)
	if err != nil {
		n.t.log.WithField("repo", repo).Debugf("catalog unavailable, probing tags: %v", err)
	}
	for _, r := range catalog {
		if r == repo || strings.HasPrefix(r, repo+"/") {
			return true, nil
		}
	}
	if err == nil && len(catalog) == 0 {
		return true, nil
	}
	if _, err := n.t.meta.Tags(ctx, repo); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (n *pathDir) lookupImage(ctx context.Context, name string, in imageName, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := n.t
	if in.byDigest && t.api == registry.APIV1 {
		return nil, syscall.ENOENT // v1 has no manifests, so no digests
	}
	repo := joinRepo(n.prefix, in.component)
	img, err := t.meta.Resolve(ctx, repo, in.ref, t.platform)
	if err != nil {
		return nil, t.errno("lookup", &n.Inode, err)
	}
	c := t.imageChild(name, joinRepo(n.prefix, name), img)
	if !in.byDigest {
		c.entryTTL = t.tagTTL // the tag may move; the image it names never changes
	}
	return t.lookupChild(ctx, &n.Inode, c, out)
}

func (n *pathDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	t := n.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	catalog, err := t.meta.Catalog(ctx)
	if err != nil {
		return nil, t.errno("readdir", &n.Inode, err)
	}
	dirs := map[string]bool{}
	var repos []string // components that are repositories in this directory
	for _, r := range catalog {
		rest, ok := strings.CutPrefix(r, n.prefix)
		if n.prefix != "" {
			if !ok || !strings.HasPrefix(rest, "/") {
				continue
			}
			rest = rest[1:]
		}
		comp, deeper := rest, false
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			comp, deeper = rest[:i], true
		}
		if comp == "" {
			continue
		}
		dirs[comp] = true
		if !deeper {
			repos = append(repos, comp)
		}
	}
	if len(catalog) == 0 {
		// No catalog: show what lookups have found so far.
		for name, ch := range n.Children() {
			if _, ok := ch.Operations().(*pathDir); ok {
				dirs[name] = true
			}
		}
	}
	var cs []child
	for d := range dirs {
		cs = append(cs, n.dirChild(d))
	}
	if n.prefix == "" && t.status != nil {
		cs = append(cs, t.statusChild())
	}

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, comp := range repos {
		g.Go(func() error {
			repo := joinRepo(n.prefix, comp)
			tags, err := t.meta.Tags(gctx, repo)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return err
				}
				// One repository we cannot list must not hide the others.
				t.log.WithField("repo", repo).Warnf("list tags: %v", err)
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			for _, tag := range tags {
				name := comp + ":" + tag
				c := child{name: name, mode: fuse.S_IFDIR, ino: inoOf(t.host, "tag", joinRepo(n.prefix, name))}
				if img := t.meta.cachedImage(repo, tag, t.platform); img != nil {
					c.ino = t.imageChild(name, joinRepo(n.prefix, name), img).ino
				}
				cs = append(cs, c)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, t.errno("readdir", &n.Inode, err)
	}
	return dirStream(cs), 0
}
