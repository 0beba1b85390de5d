package fs

import (
	"context"
	"encoding/json"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/registry"
)

// hasOCILayout: an index, or a manifest that names its config and layers
// by digest. v1 images and schema 1 manifests have no blobs to lay out.
func hasOCILayout(img *registry.Image) bool {
	return img.Index != nil ||
		img.ManifestMediaType == registry.MediaTypeOCIManifest || img.ManifestMediaType == registry.MediaTypeDockerManifest
}

// ociChild is <image dir>/oci/, the image as an OCI image layout; tag, if
// not empty, names it in index.json.
func (t *tree) ociChild(img *registry.Image, id, mpath, tag string) child {
	mpath += "/oci"
	return child{
		name: "oci", mode: fuse.S_IFDIR, ino: inoOf(t.host, "oci", mpath, id), entryTTL: immutableTTL,
		make: func() node {
			d := &fixedDir{t: t, mtime: img.Created}
			d.list = func() []child { return ociChildren(t, img, id, mpath, tag) }
			return d
		},
	}
}

// ociChildren are oci-layout, index.json and blobs/: known without I/O.
// index.json holds the tag, so its inode is the tag's as well as the
// image's.
func ociChildren(t *tree, img *registry.Image, id, mpath, tag string) []child {
	file := func(name string, data func() []byte) child {
		return child{
			name: name, mode: fuse.S_IFREG, ino: inoOf(t.host, img.Repository, id, "oci", tag, name), entryTTL: immutableTTL,
			make: func() node { return &bytesFile{data: data(), mtime: img.Created} },
		}
	}
	blobs := mpath + "/" + ocispec.ImageBlobsDir
	return []child{
		file(ocispec.ImageLayoutFile, func() []byte {
			return []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)
		}),
		file(ocispec.ImageIndexFile, func() []byte { return ociIndex(ociTop(img), tag) }),
		{
			name: ocispec.ImageBlobsDir, mode: fuse.S_IFDIR, ino: inoOf(t.host, "ociblobs", blobs, id), entryTTL: immutableTTL,
			make: func() node {
				d := &fixedDir{t: t, mtime: img.Created}
				d.list = func() []child {
					sha := blobs + "/sha256"
					return []child{{
						name: "sha256", mode: fuse.S_IFDIR, ino: inoOf(t.host, "ociblobs", sha, id), entryTTL: immutableTTL,
						make: func() node { return &ociBlobsDir{fixedDir: fixedDir{t: t, mtime: img.Created}, img: img, id: id} },
					}}
				}
				return d
			},
		},
	}
}

// ociTop is the descriptor index.json names: the index of an index image,
// else the manifest.
func ociTop(img *registry.Image) ocispec.Descriptor {
	if img.Index != nil {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		mt := registry.MediaTypeOCIIndex
		if json.Unmarshal(img.Index, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
		return ocispec.Descriptor{MediaType: mt, Digest: img.IndexDigest, Size: int64(len(img.Index))}
	}
	return ocispec.Descriptor{MediaType: img.ManifestMediaType, Digest: img.ManifestDigest, Size: int64(len(img.Manifest))}
}

// ociIndex is the index.json of a layout holding top, named tag (skopeo's
// oci:PATH:TAG and umoci's --image PATH:TAG look the tag up there).
func ociIndex(top ocispec.Descriptor, tag string) []byte {
	if tag != "" {
		top.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	}
	b, _ := json.Marshal(ocispec.Index{ // marshals: only strings and numbers
		Versioned: ocispecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{top},
	})
	return b
}

// ociBlobsDir is oci/blobs/sha256/: the index, manifests, configs and
// layer blobs of the image, named by hex digest. Layer blobs are the
// layers' blob files (ranged and lazy); listing fetches none. An index
// image holds every platform, so its first listing or lookup resolves
// each platform's manifest.
type ociBlobsDir struct {
	fixedDir // its own Lookup and Readdir
	img      *registry.Image
	id       string

	mu     sync.Mutex
	byName map[string]child // set once every blob is known
	names  []child
}

var (
	_ = (node)((*ociBlobsDir)(nil))
	_ = (gofs.NodeLookuper)((*ociBlobsDir)(nil))
	_ = (gofs.NodeReaddirer)((*ociBlobsDir)(nil))
	_ = (gofs.NodeGetattrer)((*ociBlobsDir)(nil))
)

// images are the single-platform images the layout holds: img, or every
// platform of an index (a failed resolve is retried at the next call).
func (n *ociBlobsDir) images(ctx context.Context) ([]*registry.Image, error) {
	if n.img.Index == nil {
		return []*registry.Image{n.img}, nil
	}
	var ims []*registry.Image
	for _, p := range n.img.Platforms {
		im, err := n.t.meta.Resolve(ctx, n.img.Repository, p.Digest.String(), p.Platform)
		if err != nil {
			return nil, err
		}
		ims = append(ims, im)
	}
	return ims, nil
}

// blobs lists every blob once, by digest.
func (n *ociBlobsDir) blobs(ctx context.Context) (map[string]child, []child, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byName != nil {
		return n.byName, n.names, nil
	}
	ims, err := n.images(ctx)
	if err != nil {
		return nil, nil, err
	}
	t, img := n.t, n.img
	byName := map[string]child{}
	var names []child
	add := func(d digest.Digest, mk func() node) {
		name := d.Encoded()
		if _, dup := byName[name]; dup || d.Algorithm() != digest.SHA256 {
			return
		}
		c := child{name: name, mode: fuse.S_IFREG, ino: inoOf(t.host, img.Repository, n.id, "oci/blobs", d.String()), entryTTL: immutableTTL, make: mk}
		byName[name] = c
		names = append(names, child{name: name, mode: c.mode, ino: c.ino})
	}
	bytesBlob := func(d digest.Digest, b []byte) {
		add(d, func() node { return &bytesFile{data: b, mtime: img.Created} })
	}
	if img.Index != nil {
		bytesBlob(img.IndexDigest, img.Index)
	}
	for _, im := range ims {
		if im.Manifest == nil {
			continue
		}
		bytesBlob(im.ManifestDigest, im.Manifest)
		if im.ConfigDigest != "" {
			bytesBlob(im.ConfigDigest, im.Config)
		}
		for _, l := range im.Layers {
			if l.Digest != "" {
				ref := t.layerRef(im.Repository, l)
				add(l.Digest, func() node { return &blobFile{ref: ref, mtime: img.Created} })
			}
		}
	}
	n.byName, n.names = byName, names
	return byName, names, nil
}

func (n *ociBlobsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	byName, _, err := n.blobs(ctx)
	if err != nil {
		return nil, n.t.errno("lookup", &n.Inode, err)
	}
	c, ok := byName[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.t.lookupChild(ctx, &n.Inode, c, out)
}

func (n *ociBlobsDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ctx, cancel := n.t.opCtx(ctx)
	defer cancel()
	_, names, err := n.blobs(ctx)
	if err != nil {
		return nil, n.t.errno("readdir", &n.Inode, err)
	}
	return n.t.dirStream(&n.Inode, append([]child(nil), names...)), 0
}
