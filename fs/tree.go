package fs

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// tree is what every node of one mount shares. Its fields never change
// after NewRoot.
type tree struct {
	meta      *metaCache
	host      string
	api       string
	s         *session.Session
	platform  registry.Platform
	tagTTL    time.Duration
	opTimeout time.Duration
	log       logrus.FieldLogger
	status    *Status
	started   time.Time

	mu     sync.Mutex
	layers map[*session.Layer]*layerRef // one per layer for the mount's life

	shown sync.Map // image ID → *shownImage: images shown, for .regfs/stats
}

// layerRef returns the tree's state of layer l of repo, one per session
// handle, so what one open learned (the tar size) outlives the kernel
// forgetting the layer's nodes.
func (t *tree) layerRef(repo string, l registry.Layer) *layerRef {
	sl := t.s.Layer(repo, l)
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.layers[sl]
	if !ok {
		r = &layerRef{t: t, l: sl}
		t.layers[sl] = r
	}
	return r
}

// opCtx bounds one FUSE operation; the kernel's interrupt still cancels it.
func (t *tree) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.opTimeout)
}

func (t *tree) errno(op string, n *gofs.Inode, err error) syscall.Errno {
	return toErrno(t.log, op, "/"+n.Path(nil), err)
}

// node is what every node kind adds to go-fuse's interfaces: its attributes
// and how long the kernel may keep them.
type node interface {
	gofs.InodeEmbedder
	// fill sets a's mode, size, times and link count. Only nodes whose size
	// is not known in advance may do I/O here.
	fill(ctx context.Context, a *fuse.Attr) error
	attrTTL() time.Duration
}

// fixedDir is what the directories regfs makes up share: their entries
// come from a list known without I/O, their attributes never change
// (0555, the mtime given). The embedding type sets list to its own
// children method.
type fixedDir struct {
	gofs.Inode
	noXattrs
	t     *tree
	mtime time.Time
	list  func() []child
}

func (n *fixedDir) fill(_ context.Context, a *fuse.Attr) error {
	dirAttr(a, n.mtime)
	return nil
}

func (n *fixedDir) attrTTL() time.Duration { return immutableTTL }

func (n *fixedDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *fixedDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, ok := findChild(n.list(), name)
	if !ok {
		return nil, syscall.ENOENT
	}
	ctx, cancel := n.t.opCtx(ctx) // a child's attributes may need I/O (a blob's size)
	defer cancel()
	return n.t.lookupChild(ctx, &n.Inode, c, out)
}

func (n *fixedDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	return n.t.dirStream(&n.Inode, n.list()), 0
}

// child describes one entry of a directory, for both Lookup and Readdir.
type child struct {
	name     string
	mode     uint32 // fuse.S_IFDIR or fuse.S_IFREG
	ino      uint64
	entryTTL time.Duration
	make     func() node
}

// lookupChild makes (or finds: go-fuse deduplicates on Ino) the child's
// inode and fills out with its attributes and timeouts.
func (t *tree) lookupChild(ctx context.Context, parent *gofs.Inode, c child, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	in := parent.NewInode(ctx, c.make(), gofs.StableAttr{Mode: c.mode, Ino: c.ino})
	n := in.Operations().(node)
	if err := n.fill(ctx, &out.Attr); err != nil {
		return nil, t.errno("lookup", parent, err)
	}
	out.SetEntryTimeout(c.entryTTL)
	out.SetAttrTimeout(n.attrTTL())
	return in, 0
}

func findChild(cs []child, name string) (child, bool) {
	for _, c := range cs {
		if c.name == name {
			return c, true
		}
	}
	return child{}, false
}

// dirStream lists cs, the entries of directory dir, sorted by name,
// leaving out the names no lookup could reach (unshownNames).
func (t *tree) dirStream(dir *gofs.Inode, cs []child) gofs.DirStream {
	slices.SortFunc(cs, func(a, b child) int { return strings.Compare(a.name, b.name) })
	es := make([]fuse.DirEntry, 0, len(cs))
	var unshown unshownNames
	for _, c := range cs {
		if unshown.showable(c.name) {
			es = append(es, fuse.DirEntry{Name: c.name, Mode: c.mode, Ino: c.ino})
		}
	}
	unshown.log(t, dir)
	return gofs.NewListDirStream(es)
}

// getattr is the Getattr of every node kind.
func (t *tree) getattr(ctx context.Context, n node, out *fuse.AttrOut) syscall.Errno {
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	if err := n.fill(ctx, &out.Attr); err != nil {
		return t.errno("getattr", n.EmbeddedInode(), err)
	}
	out.SetTimeout(n.attrTTL())
	return 0
}

func setTimes(a *fuse.Attr, mtime time.Time) {
	if mtime.IsZero() || mtime.Before(time.Unix(0, 0)) {
		mtime = time.Unix(0, 0)
	}
	a.SetTimes(&mtime, &mtime, &mtime)
}

// mountOwner owns the nodes regfs makes up (repositories, image
// directories, manifest.json...): the user who mounted. Tar entries keep
// the owner their header names.
var mountOwner = fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}

// dirAttr: 0555, nlink 1 (tools read it as "count unknown" and never skip
// subdirectories on the strength of it).
func dirAttr(a *fuse.Attr, mtime time.Time) {
	a.Mode = fuse.S_IFDIR | 0o555
	a.Nlink = 1
	a.Owner = mountOwner
	setTimes(a, mtime)
}

func fileAttr(a *fuse.Attr, size int64, mtime time.Time) {
	a.Mode = fuse.S_IFREG | 0o444
	a.Nlink = 1
	a.Owner = mountOwner
	a.Size = uint64(size)
	setTimes(a, mtime)
}

// isWrite reports whether open flags ask for anything but reading.
func isWrite(flags uint32) bool {
	return flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0
}
