package fs

import (
	"archive/tar"
	"context"
	"fmt"
	iofs "io/fs"
	"path"
	"sort"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/rootfs"
	"github.com/regfs/regfs/session"
)

// A view is one tree of tar entries: a layer's own (layers/<id>/fs/, whiteouts
// shown as they are) or an image's merged one (rootfs/, from
// rootfs.Merge). Names are relative, "" is the root.
type view interface {
	// id is the view's identity, part of its files' inode numbers.
	id() string
	lookup(ctx context.Context, name string) (ventry, error)
	children(ctx context.Context, dir string) ([]ventry, error)
	open(ctx context.Context, v ventry) (blobio.ReaderAt, error)
}

// ventry is an entry as a view shows it.
type ventry struct {
	e         *layerindex.Entry // as the tar lists it (a hardlink's own entry)
	data      *layerindex.Entry // what holds the data: e, or a hardlink's target; nil if the target is missing
	layer     int               // the layer it comes from (merged views)
	dataLayer int               // the layer of data (a hardlink may reach below its own)
	nlink     int
}

// layerView is one layer's own tree.
type layerView struct {
	ref *layerRef

	mu    sync.Mutex
	x     *layerindex.Index
	links map[string]int
}

func (v *layerView) id() string {
	return "layerfs:" + v.ref.l.Repository() + ":" + v.ref.l.Descriptor().ID
}

func (v *layerView) index(ctx context.Context) (*layerindex.Index, map[string]int, error) {
	v.mu.Lock()
	x, links := v.x, v.links
	v.mu.Unlock()
	if x != nil {
		return x, links, nil
	}
	l, err := v.ref.l.Index(ctx)
	if err != nil {
		return nil, nil, err
	}
	x, err = l.Index(ctx)
	if err != nil {
		return nil, nil, err
	}
	links = rootfs.LinkCounts(x)
	v.mu.Lock()
	v.x, v.links = x, links
	v.mu.Unlock()
	return x, links, nil
}

func (v *layerView) entry(x *layerindex.Index, links map[string]int, e *layerindex.Entry) ventry {
	ve := ventry{e: e, nlink: 1}
	if t, err := x.Resolve(e); err == nil {
		ve.data = t
		if n := links[t.Name]; n > 0 {
			ve.nlink = n
		}
	}
	return ve
}

func (v *layerView) lookup(ctx context.Context, name string) (ventry, error) {
	x, links, err := v.index(ctx)
	if err != nil {
		return ventry{}, err
	}
	e, ok := x.Lookup(name)
	if !ok {
		return ventry{}, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
	}
	return v.entry(x, links, e), nil
}

func (v *layerView) children(ctx context.Context, dir string) ([]ventry, error) {
	x, links, err := v.index(ctx)
	if err != nil {
		return nil, err
	}
	var out []ventry
	for _, e := range x.Children(dir) {
		out = append(out, v.entry(x, links, e))
	}
	return out, nil
}

func (v *layerView) open(ctx context.Context, ve ventry) (blobio.ReaderAt, error) {
	if ve.data == nil {
		return nil, brokenHardlink(ve)
	}
	l, err := v.ref.l.Index(ctx)
	if err != nil {
		return nil, err
	}
	return l.OpenFile(ctx, ve.e)
}

// mergedView is an image's rootfs: every layer applied in order.
type mergedView struct {
	img  *session.Image
	imID string
}

func (v *mergedView) id() string { return "rootfs:" + v.img.Descriptor().Repository + ":" + v.imID }

func (v *mergedView) entry(m *rootfs.Merged, me rootfs.Entry) ventry {
	ve := ventry{e: me.Entry, layer: me.Layer, dataLayer: me.Layer, nlink: m.Nlink(me)}
	if t, err := m.Resolve(me); err == nil {
		ve.data, ve.dataLayer = t.Entry, t.Layer
	}
	return ve
}

func (v *mergedView) lookup(ctx context.Context, name string) (ventry, error) {
	m, err := v.img.Rootfs(ctx)
	if err != nil {
		return ventry{}, err
	}
	me, ok := m.Lookup(name)
	if !ok {
		return ventry{}, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
	}
	return v.entry(m, me), nil
}

func (v *mergedView) children(ctx context.Context, dir string) ([]ventry, error) {
	m, err := v.img.Rootfs(ctx)
	if err != nil {
		return nil, err
	}
	var out []ventry
	for _, me := range m.Children(dir) {
		out = append(out, v.entry(m, me))
	}
	return out, nil
}

func (v *mergedView) open(ctx context.Context, ve ventry) (blobio.ReaderAt, error) {
	if ve.data == nil {
		return nil, brokenHardlink(ve)
	}
	l, err := v.img.Layers()[ve.dataLayer].Index(ctx)
	if err != nil {
		return nil, err
	}
	return l.OpenFile(ctx, ve.data)
}

// brokenHardlink is the error of opening a hardlink whose target the view
// does not have: the name is listed (the tar has it), so not ENOENT but EIO
// with one log line naming the target (toErrno).
func brokenHardlink(ve ventry) error {
	return fmt.Errorf("hardlink %s: its target %s is not in this view (a broken layer, or in a per-layer view a file of a layer below)", ve.e.Name, ve.e.Linkname)
}

// typeBits maps a tar type to the file type bits of st_mode.
func typeBits(typ byte) uint32 {
	switch typ {
	case tar.TypeDir:
		return fuse.S_IFDIR
	case tar.TypeSymlink:
		return fuse.S_IFLNK
	case tar.TypeChar:
		return syscall.S_IFCHR
	case tar.TypeBlock:
		return syscall.S_IFBLK
	case tar.TypeFifo:
		return syscall.S_IFIFO
	}
	return fuse.S_IFREG
}

// permBits are the permission bits with setuid, setgid and sticky: shown,
// never acted on (the mount is nosuid,nodev).
func permBits(m iofs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&iofs.ModeSetuid != 0 {
		p |= syscall.S_ISUID
	}
	if m&iofs.ModeSetgid != 0 {
		p |= syscall.S_ISGID
	}
	if m&iofs.ModeSticky != 0 {
		p |= syscall.S_ISVTX
	}
	return p
}

// newDev encodes a device number as the kernel's 32-bit new_encode_dev.
func newDev(major, minor int64) uint32 {
	ma, mi := uint32(major), uint32(minor)
	return (mi & 0xff) | (ma&0xfff)<<8 | (mi&^0xff)<<12
}

func (ve ventry) typ() byte {
	if ve.data != nil {
		return ve.data.Type
	}
	return tar.TypeReg // a hardlink to a missing target: an empty file that fails to open
}

// entryBase is what every entry node kind shares: its attributes and xattrs.
type entryBase struct {
	t     *tree
	v     view
	name  string // path in the view
	mpath string // mount path, for the identity of child directories
	ve    ventry
}

func (b *entryBase) fill(_ context.Context, a *fuse.Attr) error {
	e, d := b.ve.e, b.ve.data
	if d == nil && e == nil {
		d = &layerindex.Entry{Type: tar.TypeDir, Mode: 0o555}
	}
	if d == nil {
		d = &layerindex.Entry{Type: tar.TypeReg, Mode: e.Mode, UID: e.UID, GID: e.GID, ModTime: e.ModTime}
	}
	a.Mode = typeBits(d.Type) | permBits(d.Mode)
	a.Uid, a.Gid = uint32(d.UID), uint32(d.GID)
	a.Nlink = uint32(b.ve.nlink)
	switch d.Type {
	case tar.TypeReg, tar.TypeGNUSparse:
		a.Size = uint64(d.Size)
	case tar.TypeSymlink:
		a.Size = uint64(len(d.Linkname))
	case tar.TypeChar, tar.TypeBlock:
		a.Rdev = newDev(d.Devmajor, d.Devminor)
	case tar.TypeDir:
		a.Nlink = 1
	}
	setTimes(a, d.ModTime)
	return nil
}

func (b *entryBase) attrTTL() time.Duration { return immutableTTL }

func (b *entryBase) xattrs() map[string]string {
	switch {
	case b.ve.data != nil:
		return b.ve.data.Xattrs
	case b.ve.e != nil:
		return b.ve.e.Xattrs
	}
	return nil // a directory no tar entry describes (the root of rootfs/, an implied parent)
}

func (b *entryBase) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := b.xattrs()[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (b *entryBase) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	var names []string
	for k := range b.xattrs() {
		names = append(names, k)
	}
	sort.Strings(names)
	var list []byte
	for _, n := range names {
		list = append(append(list, n...), 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// child is the directory entry of ve inside directory b.
func (b *entryBase) child(ve ventry) child {
	t, v := b.t, b.v
	base := path.Base(ve.e.Name)
	mode := typeBits(ve.typ())
	c := child{name: base, mode: mode, entryTTL: immutableTTL}
	next := entryBase{t: t, v: v, name: ve.e.Name, mpath: b.mpath + "/" + base, ve: ve}
	switch mode {
	case fuse.S_IFDIR:
		c.ino = inoOf(t.host, "entrydir", next.mpath, v.id())
		c.make = func() node { return &entryDir{entryBase: next} }
	case fuse.S_IFREG:
		// Hardlinks share the inode: it names the data, not the path.
		dataName := ve.e.Name
		if ve.data != nil {
			dataName = ve.data.Name
		}
		c.ino = inoOf(t.host, v.id(), fmt.Sprint(ve.dataLayer), dataName)
		c.make = func() node { return &entryFile{entryBase: next} }
	case fuse.S_IFLNK:
		c.ino = inoOf(t.host, v.id(), fmt.Sprint(ve.layer), ve.e.Name)
		c.make = func() node { return &entrySymlink{entryBase: next} }
	default:
		c.ino = inoOf(t.host, v.id(), fmt.Sprint(ve.layer), ve.e.Name)
		c.make = func() node { return &entrySpecial{entryBase: next} }
	}
	return c
}

// entryDir is a directory of a view; the view's root has no entry of its
// own until the index is there, so it shows as 0555 with the image's time
// (stat of rootfs/ must not wait for every layer's index).
type entryDir struct {
	gofs.Inode
	entryBase
	root  bool
	mtime time.Time // of the root
}

var (
	_ = (node)((*entryDir)(nil))
	_ = (gofs.NodeLookuper)((*entryDir)(nil))
	_ = (gofs.NodeReaddirer)((*entryDir)(nil))
	_ = (gofs.NodeGetattrer)((*entryDir)(nil))
	_ = (gofs.NodeGetxattrer)((*entryDir)(nil))
	_ = (gofs.NodeListxattrer)((*entryDir)(nil))
)

func (n *entryDir) fill(ctx context.Context, a *fuse.Attr) error {
	if n.root {
		dirAttr(a, n.mtime)
		return nil
	}
	return n.entryBase.fill(ctx, a)
}

func (n *entryDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *entryDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	full := name
	if n.name != "" {
		full = n.name + "/" + name
	}
	ve, err := n.v.lookup(ctx, full)
	if err != nil {
		return nil, n.t.errno("lookup", &n.Inode, err)
	}
	return n.t.lookupChild(ctx, &n.Inode, n.child(ve), out)
}

func (n *entryDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	ves, err := n.v.children(ctx, n.name)
	if err != nil {
		return nil, n.t.errno("readdir", &n.Inode, err)
	}
	cs := make([]child, 0, len(ves))
	for _, ve := range ves {
		cs = append(cs, n.child(ve))
	}
	return n.t.dirStream(&n.Inode, cs), 0
}

// entryFile is a regular file (or a hardlink to one).
type entryFile struct {
	gofs.Inode
	entryBase
}

var (
	_ = (node)((*entryFile)(nil))
	_ = (gofs.NodeOpener)((*entryFile)(nil))
	_ = (gofs.NodeGetattrer)((*entryFile)(nil))
	_ = (gofs.NodeGetxattrer)((*entryFile)(nil))
	_ = (gofs.NodeListxattrer)((*entryFile)(nil))
)

func (n *entryFile) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *entryFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	r, err := n.v.open(ctx, n.ve)
	if err != nil {
		return nil, 0, n.t.errno("open", &n.Inode, err)
	}
	return &entryHandle{n: n, r: r}, fuse.FOPEN_KEEP_CACHE, 0
}

type entryHandle struct {
	n *entryFile
	r blobio.ReaderAt
}

var _ = (gofs.FileReader)((*entryHandle)(nil))

func (h *entryHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	t := h.n.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	b, err := readFull(ctx, h.r.ReadAt, dest, off, h.r.Size())
	if err != nil {
		return nil, t.errno("read", &h.n.Inode, fmt.Errorf("at %d: %w", off, err))
	}
	return fuse.ReadResultData(b), 0
}

// entrySymlink is a symbolic link: shown, never followed by regfs.
type entrySymlink struct {
	gofs.Inode
	entryBase
}

var (
	_ = (node)((*entrySymlink)(nil))
	_ = (gofs.NodeReadlinker)((*entrySymlink)(nil))
	_ = (gofs.NodeGetattrer)((*entrySymlink)(nil))
	_ = (gofs.NodeGetxattrer)((*entrySymlink)(nil))
	_ = (gofs.NodeListxattrer)((*entrySymlink)(nil))
)

func (n *entrySymlink) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

func (n *entrySymlink) Readlink(context.Context) ([]byte, syscall.Errno) {
	return []byte(n.ve.data.Linkname), 0
}

// entrySpecial is a device or fifo: attributes only (nodev: never opened
// as a device).
type entrySpecial struct {
	gofs.Inode
	entryBase
}

var (
	_ = (node)((*entrySpecial)(nil))
	_ = (gofs.NodeGetattrer)((*entrySpecial)(nil))
	_ = (gofs.NodeGetxattrer)((*entrySpecial)(nil))
	_ = (gofs.NodeListxattrer)((*entrySpecial)(nil))
)

func (n *entrySpecial) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}
