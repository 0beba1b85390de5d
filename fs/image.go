package fs

import (
	"context"
	"encoding/json"
	"syscall"

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

// imageChild is the directory of img, reached by name at mount path mpath.
// Directories carry the mount path in their identity (two aliases of one
// directory inode confuse the kernel); files inside an image share inodes
// across the names of the image.
func (t *tree) imageChild(name, mpath string, img *registry.Image) child {
	id := imageID(img)
	return child{
		name: name, mode: fuse.S_IFDIR, ino: inoOf(t.host, "image", mpath, id), entryTTL: immutableTTL,
		make: func() node {
			t.noteImage(mpath, id, img)
			d := &imageDir{img: img, id: id, mpath: mpath}
			d.fixedDir = fixedDir{t: t, mtime: img.Created, list: d.children}
			return d
		},
	}
}

// imageDir is one image: manifest.json, index.json and platforms/ (for an
// index), config.json, json, ancestry, layers/.
type imageDir struct {
	fixedDir
	img   *registry.Image
	id    string
	mpath string
}

var (
	_ = (node)((*imageDir)(nil))
	_ = (gofs.NodeLookuper)((*imageDir)(nil))
	_ = (gofs.NodeReaddirer)((*imageDir)(nil))
	_ = (gofs.NodeGetattrer)((*imageDir)(nil))
)

// fileChild is an immutable file of this image holding data.
func (n *imageDir) fileChild(name string, data []byte) child {
	t, img := n.t, n.img
	return child{
		name: name, mode: fuse.S_IFREG, ino: inoOf(t.host, img.Repository, n.id, name), entryTTL: immutableTTL,
		make: func() node { return &bytesFile{data: data, mtime: img.Created} },
	}
}

func (n *imageDir) children() []child {
	t, img := n.t, n.img
	var cs []child
	if img.Manifest != nil {
		cs = append(cs, n.fileChild("manifest.json", img.Manifest))
	}
	if img.Index != nil {
		cs = append(cs, n.fileChild("index.json", img.Index))
		cs = append(cs, child{
			name: "platforms", mode: fuse.S_IFDIR, ino: inoOf(t.host, "platforms", n.mpath, n.id), entryTTL: immutableTTL,
			make: func() node {
				return &platformsDir{fixedDir: fixedDir{t: t, mtime: img.Created}, img: img, mpath: n.mpath + "/platforms"}
			},
		})
	}
	if img.Config != nil {
		cs = append(cs, n.fileChild("config.json", img.Config))
	}
	if len(img.Layers) > 0 {
		if top := img.Layers[len(img.Layers)-1]; top.JSON != nil {
			cs = append(cs, n.fileChild("json", top.JSON))
		}
		anc, _ := json.Marshal(img.Ancestry()) // a []string always marshals
		cs = append(cs, n.fileChild("ancestry", anc))
		cs = append(cs, child{
			name: "layers", mode: fuse.S_IFDIR, ino: inoOf(t.host, "layers", n.mpath, n.id), entryTTL: immutableTTL,
			make: func() node {
				d := &layersDir{img: img, id: n.id, mpath: n.mpath + "/layers"}
				d.fixedDir = fixedDir{t: t, mtime: img.Created, list: d.children}
				return d
			},
		})
		mpath, id := n.mpath+"/rootfs", n.id
		cs = append(cs, child{
			name: "rootfs", mode: fuse.S_IFDIR, ino: inoOf(t.host, "rootfs", mpath, id), entryTTL: immutableTTL,
			make: func() node {
				v := &mergedView{img: t.s.Image(id, img), imID: id}
				return &entryDir{entryBase: entryBase{t: t, v: v, mpath: mpath}, root: true, mtime: img.Created}
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
			return t.lookupChild(ctx, &n.Inode, t.imageChild(name, mpath, d.img), out)
		}
	}
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	img, err := t.meta.Resolve(ctx, n.img.Repository, p.Digest.String(), p.Platform)
	if err != nil {
		return nil, t.errno("lookup", &n.Inode, err)
	}
	return t.lookupChild(ctx, &n.Inode, t.imageChild(name, mpath, img), out)
}

func (n *platformsDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var cs []child
	for name := range n.platforms() {
		cs = append(cs, child{name: name, mode: fuse.S_IFDIR})
	}
	return dirStream(cs), 0
}

// layersDir has one directory per layer, named by layer ID.
type layersDir struct {
	fixedDir
	img   *registry.Image
	id    string
	mpath string
}

var (
	_ = (node)((*layersDir)(nil))
	_ = (gofs.NodeLookuper)((*layersDir)(nil))
	_ = (gofs.NodeReaddirer)((*layersDir)(nil))
	_ = (gofs.NodeGetattrer)((*layersDir)(nil))
)

func (n *layersDir) children() []child {
	t, img := n.t, n.img
	seen := map[string]bool{}
	var cs []child
	for _, l := range img.Layers {
		if l.ID == "" || seen[l.ID] {
			continue
		}
		seen[l.ID] = true
		mpath := n.mpath + "/" + l.ID
		cs = append(cs, child{
			name: l.ID, mode: fuse.S_IFDIR, ino: inoOf(t.host, "layer", mpath, n.id), entryTTL: immutableTTL,
			make: func() node {
				d := &layerDir{img: img, id: n.id, mpath: mpath, ref: t.layerRef(img.Repository, l)}
				d.fixedDir = fixedDir{t: t, mtime: img.Created, list: d.children}
				return d
			},
		})
	}
	return cs
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
