package fs

import (
	"context"
	"encoding/json"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/registry"
)

// imageID is what makes an image itself, whatever name reached it: the
// index and manifest digests (v2), or the top image ID (v1). Inode numbers
// of everything inside an image derive from it.
func imageID(img *registry.Image) string {
	switch {
	case img.ManifestDigest != "" || img.IndexDigest != "":
		return img.IndexDigest.String() + "+" + img.ManifestDigest.String()
	case len(img.Layers) > 0:
		return "v1:" + img.Layers[len(img.Layers)-1].ID
	}
	return "ref:" + img.Reference
}

// imageChild is the directory of img, pinned (reached by digest, or as a
// platform of an index), at mount path mpath; tag is the tag that reached
// the index ("" by digest), which names a platform in its views.
// Directories carry the mount path in their identity (two aliases of one
// directory inode confuse the kernel); files inside an image share inodes
// across the names of the image.
func (t *tree) imageChild(name, mpath string, img *registry.Image, tag string) child {
	return child{
		name: name, mode: fuse.S_IFDIR, ino: inoOf(t.host, "image", mpath, imageID(img)), entryTTL: immutableTTL,
		make: func() node { return &imageDir{t: t, mpath: mpath, img: img, tag: tag} },
	}
}

// tagChild is the directory of repo:tag at mount path mpath: a name, its
// image resolved only when the directory is read or a child looked up, so
// `ls -l` of many tags resolves none. Its identity is the mount path alone;
// what it holds follows the tag.
func (t *tree) tagChild(name, mpath, repo, tag string) child {
	return child{
		name: name, mode: fuse.S_IFDIR, ino: inoOf(t.host, "tagimage", mpath), entryTTL: t.tagTTL,
		make: func() node { return &imageDir{t: t, mpath: mpath, repo: repo, tag: tag} },
	}
}

// lookupTag is the lookup of repo:tag as name at mount path mpath. A tag the
// fresh cached tag list names needs no request; any other is resolved, so a
// tag that does not exist is ENOENT here, not inside.
func (t *tree) lookupTag(ctx context.Context, parent *gofs.Inode, name, mpath, repo, tag string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !t.meta.cachedTag(repo, tag) {
		if _, err := t.meta.Resolve(ctx, repo, tag, t.platform); err != nil {
			return nil, t.errno("lookup", parent, err)
		}
	}
	return t.lookupChild(ctx, parent, t.tagChild(name, mpath, repo, tag), out)
}

// lookupDigest is the lookup of repo@dgst as name at mount path mpath: the
// digest is resolved (it must exist), and pins the directory.
func (t *tree) lookupDigest(ctx context.Context, parent *gofs.Inode, name, mpath, repo, dgst string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if t.api == registry.APIV1 {
		return nil, syscall.ENOENT // v1 has no manifests, so no digests
	}
	img, err := t.meta.Resolve(ctx, repo, dgst, t.platform)
	if err != nil {
		return nil, t.errno("lookup", parent, err)
	}
	return t.lookupChild(ctx, parent, t.imageChild(name, mpath, img, ""), out)
}

// imageDir is one image: manifest.json, index.json and platforms/ (for an
// index), config.json, json, ancestry, layers/, rootfs/. Reached by digest
// it holds its image; reached by tag it resolves the tag when read (the
// answer cached for the tag TTL), and its attributes need no manifest.
type imageDir struct {
	gofs.Inode
	noXattrs
	t     *tree
	mpath string
	img   *registry.Image // pinned; nil when reached by tag
	repo  string          // by tag: the repository
	tag   string          // the tag that reached it (or its index), if any;
	// at the mount root, a digest until Root.Resolve pins img
}

var (
	_ = (node)((*imageDir)(nil))
	_ = (gofs.NodeLookuper)((*imageDir)(nil))
	_ = (gofs.NodeReaddirer)((*imageDir)(nil))
	_ = (gofs.NodeGetattrer)((*imageDir)(nil))
)

// fill: a pinned image shows its creation time; a tag, whose image may
// change, the mount's start, like the other directories of names.
func (n *imageDir) fill(_ context.Context, a *fuse.Attr) error {
	mtime := n.t.started
	if n.img != nil {
		mtime = n.img.Created
	}
	dirAttr(a, mtime)
	return nil
}

func (n *imageDir) attrTTL() time.Duration { return immutableTTL }

func (n *imageDir) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.t.getattr(ctx, n, out)
}

// image is the image this directory shows now.
func (n *imageDir) image(ctx context.Context) (*registry.Image, error) {
	img := n.img
	if img == nil {
		var err error
		if img, err = n.t.meta.Resolve(ctx, n.repo, n.tag, n.t.platform); err != nil {
			return nil, err
		}
	}
	n.t.noteImage(n.mpath, imageID(img), img)
	return img, nil
}

// children lists img's entries; names under a tag point to the tag's
// current image, so their entries keep only for the tag TTL. At the mount
// root, .regfs/ is one of them.
func (n *imageDir) children(img *registry.Image) []child {
	cs := imageChildren(n.t, img, n.mpath, n.tag)
	if n.img == nil {
		for i := range cs {
			cs[i].entryTTL = n.t.tagTTL
		}
	}
	if n.IsRoot() && n.t.status != nil {
		cs = append(cs, n.t.statusChild())
	}
	return cs
}

func (n *imageDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	img, err := n.image(ctx)
	if err != nil {
		return nil, n.t.errno("lookup", &n.Inode, err)
	}
	c, ok := findChild(n.children(img), name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.t.lookupChild(ctx, &n.Inode, c, out)
}

func (n *imageDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	img, err := n.image(ctx)
	if err != nil {
		return nil, n.t.errno("readdir", &n.Inode, err)
	}
	return n.t.dirStream(&n.Inode, n.children(img)), 0
}

// imageFile is an immutable file of image id holding data.
func imageFile(t *tree, img *registry.Image, id, name string, data func() []byte) child {
	return child{
		name: name, mode: fuse.S_IFREG, ino: inoOf(t.host, img.Repository, id, name), entryTTL: immutableTTL,
		make: func() node { return &bytesFile{data: data(), mtime: img.Created} },
	}
}

// imageChildren are the entries of the directory of img at mpath, reached
// by tag ("" if by digest). Nothing here costs more than a constant per
// entry: an image may have thousands of layers, and every lookup lists
// these again.
func imageChildren(t *tree, img *registry.Image, mpath, tag string) []child {
	id := imageID(img)
	bytesOf := func(b []byte) func() []byte { return func() []byte { return b } }
	var cs []child
	if img.Manifest != nil {
		cs = append(cs, imageFile(t, img, id, "manifest.json", bytesOf(img.Manifest)))
	}
	if img.Index != nil {
		cs = append(cs, imageFile(t, img, id, "index.json", bytesOf(img.Index)))
		cs = append(cs, child{
			name: "platforms", mode: fuse.S_IFDIR, ino: inoOf(t.host, "platforms", mpath, id), entryTTL: immutableTTL,
			make: func() node {
				return &platformsDir{fixedDir: fixedDir{t: t, mtime: img.Created}, img: img, mpath: mpath + "/platforms", tag: tag}
			},
		})
	}
	if img.Config != nil {
		cs = append(cs, imageFile(t, img, id, "config.json", bytesOf(img.Config)))
	}
	if hasOCILayout(img) {
		cs = append(cs, t.ociChild(img, id, mpath, tag))
	}
	if c, ok := t.imageTarChild(img, id, tag); ok {
		cs = append(cs, c)
	}
	if len(img.Layers) > 0 {
		if top := img.Layers[len(img.Layers)-1]; top.JSON != nil {
			cs = append(cs, imageFile(t, img, id, "json", bytesOf(top.JSON)))
		}
		cs = append(cs, imageFile(t, img, id, "ancestry", func() []byte {
			anc, _ := json.Marshal(img.Ancestry()) // a []string always marshals
			return anc
		}))
		cs = append(cs, child{
			name: "layers", mode: fuse.S_IFDIR, ino: inoOf(t.host, "layers", mpath, id), entryTTL: immutableTTL,
			make: func() node {
				return &layersDir{fixedDir: fixedDir{t: t, mtime: img.Created}, img: img, id: id, mpath: mpath + "/layers"}
			},
		})
		rpath := mpath + "/rootfs"
		cs = append(cs, child{
			name: "rootfs", mode: fuse.S_IFDIR, ino: inoOf(t.host, "rootfs", rpath, id), entryTTL: immutableTTL,
			make: func() node {
				v := &mergedView{img: t.s.Image(id, img), imID: id}
				return &entryDir{entryBase: entryBase{t: t, v: v, mpath: rpath}, root: true, mtime: img.Created}
			},
		})
	}
	return cs
}

// platformsDir lists an index's platforms as <os>-<arch>[-<variant>]/, each
// the image directory of that platform's manifest.
type platformsDir struct {
	fixedDir // its own Lookup and Readdir
	img      *registry.Image
	mpath    string
	tag      string // the index's tag, if reached by one
}

var (
	_ = (node)((*platformsDir)(nil))
	_ = (gofs.NodeLookuper)((*platformsDir)(nil))
	_ = (gofs.NodeReaddirer)((*platformsDir)(nil))
	_ = (gofs.NodeGetattrer)((*platformsDir)(nil))
)

// platforms maps directory names to index entries; when two entries share a
// name the first in index order wins.
func (n *platformsDir) platforms() map[string]registry.PlatformManifest {
	m := map[string]registry.PlatformManifest{}
	for _, p := range n.img.Platforms {
		name := p.Platform.DirName()
		if _, dup := m[name]; !dup && p.Platform.OS != "" && p.Platform.Architecture != "" {
			m[name] = p
		}
	}
	return m
}

func (n *platformsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := n.t
	p, ok := n.platforms()[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	mpath := n.mpath + "/" + name
	// Known already: the digest pins the image, no need to resolve again.
	if ch := n.GetChild(name); ch != nil {
		if d, ok := ch.Operations().(*imageDir); ok {
			return t.lookupChild(ctx, &n.Inode, t.imageChild(name, mpath, d.img, n.tag), out)
		}
	}
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	img, err := t.meta.Resolve(ctx, n.img.Repository, p.Digest.String(), p.Platform)
	if err != nil {
		return nil, t.errno("lookup", &n.Inode, err)
	}
	return t.lookupChild(ctx, &n.Inode, t.imageChild(name, mpath, img, n.tag), out)
}

func (n *platformsDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var cs []child
	for name := range n.platforms() {
		cs = append(cs, child{name: name, mode: fuse.S_IFDIR})
	}
	return n.t.dirStream(&n.Inode, cs), 0
}

// layersDir has one directory per layer, named by layer ID. An image may
// have thousands of layers: a lookup finds its layer through an index built
// once, and listing fetches nothing.
type layersDir struct {
	fixedDir // its own Lookup and Readdir
	img      *registry.Image
	id       string
	mpath    string

	once  sync.Once
	byID  map[string]int // layer ID → first position in img.Layers
	order []string       // layer IDs, first appearance, no duplicates
}

var (
	_ = (node)((*layersDir)(nil))
	_ = (gofs.NodeLookuper)((*layersDir)(nil))
	_ = (gofs.NodeReaddirer)((*layersDir)(nil))
	_ = (gofs.NodeGetattrer)((*layersDir)(nil))
)

func (n *layersDir) index() {
	n.once.Do(func() {
		n.byID = make(map[string]int, len(n.img.Layers))
		for i, l := range n.img.Layers {
			if _, dup := n.byID[l.ID]; l.ID != "" && !dup {
				n.byID[l.ID] = i
				n.order = append(n.order, l.ID)
			}
		}
	})
}

// child is the directory of layer i.
func (n *layersDir) child(i int) child {
	t, img, l := n.t, n.img, n.img.Layers[i]
	mpath := n.mpath + "/" + l.ID
	return child{
		name: l.ID, mode: fuse.S_IFDIR, ino: inoOf(t.host, "layer", mpath, n.id), entryTTL: immutableTTL,
		make: func() node {
			d := &layerDir{img: img, id: n.id, mpath: mpath, ref: t.layerRef(img.Repository, l)}
			d.fixedDir = fixedDir{t: t, mtime: img.Created, list: d.children}
			return d
		},
	}
}

func (n *layersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.index()
	i, ok := n.byID[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.t.lookupChild(ctx, &n.Inode, n.child(i), out)
}

func (n *layersDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	n.index()
	t := n.t
	cs := make([]child, 0, len(n.order))
	for _, id := range n.order {
		mpath := n.mpath + "/" + id
		cs = append(cs, child{name: id, mode: fuse.S_IFDIR, ino: inoOf(t.host, "layer", mpath, n.id)})
	}
	return t.dirStream(&n.Inode, cs), 0
}

// layerDir is one layer: json, blob, layer.tar, digest.
type layerDir struct {
	fixedDir
	img   *registry.Image
	id    string
	mpath string
	ref   *layerRef
}

var (
	_ = (node)((*layerDir)(nil))
	_ = (gofs.NodeLookuper)((*layerDir)(nil))
	_ = (gofs.NodeReaddirer)((*layerDir)(nil))
	_ = (gofs.NodeGetattrer)((*layerDir)(nil))
)

func (n *layerDir) children() []child {
	t, l, mtime := n.t, n.ref.l.Descriptor(), n.img.Created
	ino := func(name string) uint64 { return inoOf(t.host, n.img.Repository, n.id, "layers", l.ID, name) }
	file := func(name string, data []byte) child {
		return child{
			name: name, mode: fuse.S_IFREG, ino: ino(name), entryTTL: immutableTTL,
			make: func() node { return &bytesFile{data: data, mtime: mtime} },
		}
	}
	var cs []child
	if l.JSON != nil {
		cs = append(cs, file("json", l.JSON))
	}
	switch {
	case l.Digest != "":
		cs = append(cs, file("digest", []byte(l.Digest.String()+"\n")))
	case l.Checksum != "":
		cs = append(cs, file("digest", []byte(l.Checksum+"\n")))
	}
	cs = append(cs, child{
		name: "blob", mode: fuse.S_IFREG, ino: ino("blob"), entryTTL: immutableTTL,
		make: func() node { return &blobFile{ref: n.ref, mtime: mtime} },
	})
	mpath := n.mpath + "/fs"
	cs = append(cs, child{
		name: "fs", mode: fuse.S_IFDIR, ino: inoOf(t.host, "layerfs", mpath, n.id), entryTTL: immutableTTL,
		make: func() node {
			return &entryDir{entryBase: entryBase{t: t, v: n.ref.view(), mpath: mpath}, root: true, mtime: mtime}
		},
	})
	cs = append(cs, child{
		name: "layer.tar", mode: fuse.S_IFREG, ino: ino("layer.tar"), entryTTL: immutableTTL,
		make: func() node { return &tarFile{ref: n.ref, mtime: mtime} },
	})
	return cs
}
