package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// tagsDir is <repo>/_tags/: one image directory per tag, the same image
// directory as <repo>:<tag>/ under a path without a colon. Listing it costs
// the tag list, and `ls -l` of it nothing more: a tag's directory resolves
// its image only when read. At the mount root (a repository mount) it also
// holds .regfs/ and resolves <alg>:<hex>/ names by digest, never listed; a
// tag cannot hold ':' or start with '.', so neither clashes with a tag.
type tagsDir struct {
	gofs.Inode
	noXattrs
	t    *tree
	repo string
}

var (
	_ = (node)((*tagsDir)(nil))
	_ = (gofs.NodeLookuper)((*tagsDir)(nil))
	_ = (gofs.NodeOpendirHandler)((*tagsDir)(nil))
	_ = (gofs.NodeGetattrer)((*tagsDir)(nil))
)

func (n *tagsDir) fill(_ context.Context, a *fuse.Attr) error {
	dirAttr(a, n.t.started)
	return nil
}

func (n *tagsDir) attrTTL() time.Duration { return immutableTTL }

func (n *tagsDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *tagsDir) mpath(tag string) string { return n.repo + "/" + tagsDirName + "/" + tag }

func (n *tagsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := n.t
	if n.IsRoot() {
		if name == statusDirName && t.status != nil {
			return t.lookupChild(ctx, &n.Inode, t.statusChild(), out)
		}
		if digestRE.MatchString(name) {
			ctx, cancel := t.opCtx(ctx)
			defer cancel()
			return t.lookupDigest(ctx, &n.Inode, name, n.repo+"@"+name, n.repo, name, out)
		}
	}
	// Every name of a listing is looked up next (READDIRPLUS, ls -l): the
	// cached tag list answers those without I/O, so without a timeout.
	if !isTag(name) {
		return nil, syscall.ENOENT
	}
	if t.meta.cachedTag(n.repo, name) {
		return t.lookupChild(ctx, &n.Inode, t.tagChild(name, n.mpath(name), n.repo, name), out)
	}
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	return t.lookupTag(ctx, &n.Inode, name, n.mpath(name), n.repo, name, out)
}

// OpendirHandle lists the repository's tags as the tag list's pages
// arrive.
func (n *tagsDir) OpendirHandle(context.Context, uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	t := n.t
	h := t.newListingHandle(&n.Inode, t.meta.tagList(n.repo))
	h.entry = func(tag string) (child, bool, bool) {
		if h.met(tag) {
			return child{name: tag}, false, false
		}
		if !isTag(tag) {
			return child{}, false, true // a lookup would refuse it: do not show it
		}
		return t.tagChild(tag, n.mpath(tag), n.repo, tag), true, false
	}
	h.end = func(context.Context, []string) ([]child, error) {
		if n.IsRoot() && t.status != nil {
			return []child{t.statusChild()}, nil
		}
		return nil, nil
	}
	h.logBad = func(bad int) {
		t.log.WithField("repo", n.repo).Warnf("the registry lists %d tags that are not valid tag names; not shown", bad)
	}
	return h, 0, 0
}
