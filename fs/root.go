package fs

import (
	"context"
	"errors"
	"sort"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// Root is the root directory of a mount: the registry's top-level
// repository path components or, with Options.Repository, that one
// repository's tags or, with Options.Reference too, that image's directory.
type Root struct {
	t      *tree
	top    node   // the node shown at the mount root
	source string // what is mounted, for the mount table: host[/repo[:tag|@digest]]
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
	r := &Root{t: t, source: t.host}
	switch repo, ref := opts.Repository, opts.Reference; {
	case repo == "":
		r.top = &pathDir{t: t}
	case ref == "":
		r.source += "/" + repo
		r.top = &tagsDir{t: t, repo: repo}
	default:
		// A digest is resolved like a tag until Resolve pins it.
		sep := ":"
		if digestRE.MatchString(ref) {
			sep = "@"
		}
		r.source += "/" + repo + sep + ref
		r.top = &imageDir{t: t, mpath: rootImagePath, repo: repo, tag: ref}
	}
	return r, nil
}

// rootImagePath is the mount path of an image shown at the mount root.
const rootImagePath = "."

// Resolve asks the registry for what the root names, so that a mount of a
// repository or image that does not exist can be refused before mounting:
// the repository's tag list, or the image's manifest (a digest is pinned
// here). The whole registry needs nothing. Errors are the registry
// client's, which name the reference (registry.ErrNotFound for a name
// that does not exist).
func (r *Root) Resolve(ctx context.Context) error {
	t := r.t
	switch top := r.top.(type) {
	case *tagsDir:
		_, err := t.meta.Tags(ctx, top.repo)
		return err
	case *imageDir:
		img, err := t.meta.Resolve(ctx, top.repo, top.tag, t.platform)
		if err != nil {
			return err
		}
		if isDigestRef(top.tag) {
			// pinned, as <repo>@<digest>/ is: no tag names it in oci/ or image.tar
			top.img, top.tag = img, ""
		}
	}
	return nil
}

// pathDir is a repository path prefix (the root has prefix ""). It lists
// the next path components of the catalog's repositories and, when the
// prefix is itself a repository, its _tags/ and _digests/. Listing it costs
// the catalog and nothing per repository: a repository's tags are asked
// for when its _tags/ is listed or one of its <component>:<tag> names is
// looked up (those resolve on lookup, as <component>@<digest> always did).
type pathDir struct {
	gofs.Inode
	noXattrs
	t      *tree
	prefix string
}

var (
	_ = (node)((*pathDir)(nil))
	_ = (gofs.NodeLookuper)((*pathDir)(nil))
	_ = (gofs.NodeOpendirHandler)((*pathDir)(nil))
	_ = (gofs.NodeGetattrer)((*pathDir)(nil))
)

// The directories of a repository's own names. A repository path
// component cannot start with '_', so these never clash with one.
const (
	tagsDirName    = "_tags"
	digestsDirName = "_digests"
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

// dirChild is the entry of path component component.
func (n *pathDir) dirChild(component string) child {
	t, repo := n.t, joinRepo(n.prefix, component)
	return child{
		name: component, mode: fuse.S_IFDIR, ino: inoOf(t.host, "dir", repo), entryTTL: t.tagTTL,
		make: func() node { return &pathDir{t: t, prefix: repo} },
	}
}

// repoChildren are _tags/ and _digests/ of repository n.prefix.
func (n *pathDir) repoChildren() []child {
	t, repo := n.t, n.prefix
	return []child{
		{
			name: tagsDirName, mode: fuse.S_IFDIR, ino: inoOf(t.host, "tags", repo), entryTTL: t.tagTTL,
			make: func() node { return &tagsDir{t: t, repo: repo} },
		},
		{
			name: digestsDirName, mode: fuse.S_IFDIR, ino: inoOf(t.host, "digests", repo), entryTTL: t.tagTTL,
			make: func() node { return &digestsDir{t: t, repo: repo} },
		},
	}
}

func (n *pathDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := n.t
	if n.prefix == "" && name == statusDirName && t.status != nil {
		return t.lookupChild(ctx, &n.Inode, t.statusChild(), out)
	}
	// Every name of a listing is looked up next (READDIRPLUS, ls -l): the
	// cached catalog answers those without I/O, so without a timeout.
	if catalog, ok := t.meta.cachedCatalog(); ok && catalogHas(catalog, joinRepo(n.prefix, name), true) && isComponent(name) {
		return t.lookupChild(ctx, &n.Inode, n.dirChild(name), out)
	}
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	if in, ok := parseImageName(name); ok {
		return n.lookupImage(ctx, name, in, out)
	}
	if name == tagsDirName || name == digestsDirName {
		if n.prefix == "" {
			return nil, syscall.ENOENT
		}
		c, _ := findChild(n.repoChildren(), name)
		if ch := n.GetChild(name); ch != nil && ch.StableAttr().Ino == c.ino {
			return t.lookupChild(ctx, &n.Inode, c, out)
		}
		ok, err := n.isRepo(ctx)
		if err != nil {
			return nil, t.errno("lookup", &n.Inode, err)
		}
		if !ok {
			return nil, syscall.ENOENT
		}
		return t.lookupChild(ctx, &n.Inode, c, out)
	}
	if !isComponent(name) {
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
// listed by the catalog (every name of a listing answers from the catalog
// alone), or, for names the catalog does not list, a repository with tags.
// A registry without a catalog lists nothing, so every well-formed name may
// be a prefix there.
func (n *pathDir) isRepoPrefix(ctx context.Context, repo string) (bool, error) {
	catalog, err := n.t.meta.Catalog(ctx)
	if err != nil {
		n.t.log.WithField("repo", repo).Debugf("catalog unavailable, probing tags: %v", err)
	}
	if catalogHas(catalog, repo, true) {
		return true, nil
	}
	if err == nil && len(catalog) == 0 {
		return true, nil
	}
	return n.t.hasTags(ctx, repo)
}

// isRepo reports whether n.prefix is a repository: listed by the catalog
// or, for names it does not list, one with tags.
func (n *pathDir) isRepo(ctx context.Context) (bool, error) {
	if catalog, err := n.t.meta.Catalog(ctx); err == nil && catalogHas(catalog, n.prefix, false) {
		return true, nil
	}
	return n.t.hasTags(ctx, n.prefix)
}

// hasTags reports whether repo is a repository the registry lists tags of.
func (t *tree) hasTags(ctx context.Context, repo string) (bool, error) {
	if _, err := t.meta.Tags(ctx, repo); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// catalogHas reports whether the sorted catalog lists repo, or (asPrefix) a
// repository under repo/.
func catalogHas(catalog []string, repo string, asPrefix bool) bool {
	if i := sort.SearchStrings(catalog, repo); i < len(catalog) && catalog[i] == repo {
		return true
	}
	if !asPrefix {
		return false
	}
	i := sort.SearchStrings(catalog, repo+"/")
	return i < len(catalog) && strings.HasPrefix(catalog[i], repo+"/")
}

func (n *pathDir) lookupImage(ctx context.Context, name string, in imageName, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	repo, mpath := joinRepo(n.prefix, in.component), joinRepo(n.prefix, name)
	if in.byDigest {
		return n.t.lookupDigest(ctx, &n.Inode, name, mpath, repo, in.ref, out)
	}
	return n.t.lookupTag(ctx, &n.Inode, name, mpath, repo, in.ref, out)
}

// OpendirHandle lists the catalog's path components under n.prefix as its
// pages arrive, then, once it is whole, what it says of n.prefix itself.
func (n *pathDir) OpendirHandle(context.Context, uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	t := n.t
	h := t.newListingHandle(&n.Inode, t.meta.catalogList())
	isRepo := false
	h.entry = func(repo string) (child, bool, bool) {
		rest := repo
		if n.prefix != "" {
			if repo == n.prefix {
				isRepo = true
			}
			if len(repo) <= len(n.prefix) || repo[len(n.prefix)] != '/' || repo[:len(n.prefix)] != n.prefix {
				return child{}, false, false
			}
			rest = repo[len(n.prefix)+1:]
		}
		comp, _, _ := strings.Cut(rest, "/")
		if h.met(comp) {
			return child{name: comp}, false, false
		}
		if !isComponent(comp) {
			return child{}, false, true // a lookup would refuse it: do not show it
		}
		return n.dirChild(comp), true, false
	}
	h.end = func(ctx context.Context, catalog []string) ([]child, error) {
		var cs []child
		if len(catalog) == 0 {
			// No catalog: show what lookups have found so far, and whether
			// this is a repository its tag list says (one request, for the
			// repository's own directory only).
			for name, ch := range n.Children() {
				if _, ok := ch.Operations().(*pathDir); ok {
					cs = append(cs, n.dirChild(name))
				}
			}
			if n.prefix != "" {
				ok, err := t.hasTags(ctx, n.prefix)
				if err != nil {
					t.log.WithField("repo", n.prefix).Debugf("no catalog, and no tag list: %v", err)
				}
				isRepo = ok
			}
		}
		if isRepo {
			cs = append(cs, n.repoChildren()...)
		}
		if n.prefix == "" && t.status != nil {
			cs = append(cs, t.statusChild())
		}
		return cs, nil
	}
	h.logBad = func(bad int) {
		t.log.WithField("path", "/"+n.Path(nil)).Warnf("catalog lists %d repository names that are not valid; not shown", bad)
	}
	return h, 0, 0
}
