package fs

import (
	"context"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// digestsDir is <repo>/_digests/: sha256-<hex>/ is the image directory of
// <repo>@sha256:<hex>/, under a path without a colon or '@'. Like the
// @<digest> names it resolves on lookup and lists nothing: a listing would
// cost a manifest per tag.
type digestsDir struct {
	gofs.Inode
	noXattrs
	t    *tree
	repo string
}

var (
	_ = (node)((*digestsDir)(nil))
	_ = (gofs.NodeLookuper)((*digestsDir)(nil))
	_ = (gofs.NodeReaddirer)((*digestsDir)(nil))
	_ = (gofs.NodeGetattrer)((*digestsDir)(nil))
)

func (n *digestsDir) fill(_ context.Context, a *fuse.Attr) error {
	dirAttr(a, n.t.started)
	return nil
}

func (n *digestsDir) attrTTL() time.Duration { return immutableTTL }

func (n *digestsDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *digestsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	alg, hex, ok := strings.Cut(name, "-")
	dgst := alg + ":" + hex
	if !ok || !digestRE.MatchString(dgst) {
		return nil, syscall.ENOENT
	}
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	return n.t.lookupDigest(ctx, &n.Inode, name, n.repo+"/"+digestsDirName+"/"+name, n.repo, dgst, out)
}

func (n *digestsDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	return n.t.dirStream(&n.Inode, nil), 0
}
