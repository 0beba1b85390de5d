package fs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/tarlayout"
)

// imageTarChild is <image dir>/image.tar, the image as `docker save`
// writes it, its layers the stored blobs. Only a manifest with a config and layers of known
// digest and size has one: its size must be known without a fetch.
func (t *tree) imageTarChild(img *registry.Image, id, tag string) (child, bool) {
	if img.Manifest == nil || img.ConfigDigest.Algorithm() != digest.SHA256 || !hasOCILayout(img) {
		return child{}, false
	}
	for _, l := range img.Layers {
		if l.Digest.Algorithm() != digest.SHA256 || l.Size < 0 {
			return child{}, false
		}
	}
	return child{
		name: "image.tar", mode: fuse.S_IFREG, ino: inoOf(t.host, img.Repository, id, "image.tar", tag), entryTTL: immutableTTL,
		make: func() node { return &imageTarFile{t: t, img: img, tag: tag} },
	}, true
}

// imageTarFile is image.tar. Its members are placed from the manifest's
// descriptors alone (tarlayout), so a stat fetches nothing and a read at
// any offset reads only the blob bytes under it.
type imageTarFile struct {
	gofs.Inode
	noXattrs
	t   *tree
	img *registry.Image
	tag string

	once sync.Once
	plan *imageTarPlan
	err  error
}

var (
	_ = (node)((*imageTarFile)(nil))
	_ = (gofs.NodeOpener)((*imageTarFile)(nil))
	_ = (gofs.NodeGetattrer)((*imageTarFile)(nil))
)

// imageTarPlan is image.tar's members: member i holds data[i] (metadata
// and config; nil for a directory) or the stored bytes of layers[i].
type imageTarPlan struct {
	layout *tarlayout.Layout
	data   [][]byte
	layers []*layerRef
}

// plan places image.tar's members, once.
func (f *imageTarFile) planned() (*imageTarPlan, error) {
	f.once.Do(func() { f.plan, f.err = planImageTar(f.t, f.img, f.tag) })
	return f.plan, f.err
}

// planImageTar lays image.tar out: manifest.json and repositories first
// (a streaming reader meets them before the blobs), then blobs/sha256/
// with the config and each layer once, named as docker 25 names them.
// No OCI index.json: podman would load the archive as an OCI one and
// name the image by the bare tag.
func planImageTar(t *tree, img *registry.Image, tag string) (*imageTarPlan, error) {
	mtime := img.Created.Truncate(time.Second)
	if mtime.Before(time.Unix(0, 0)) {
		mtime = time.Unix(0, 0)
	}
	p := &imageTarPlan{}
	var hdrs []*tar.Header
	add := func(name string, size int64, data []byte, l *layerRef) {
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: size, ModTime: mtime}
		if l == nil && data == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o555
		}
		hdrs = append(hdrs, h)
		p.data = append(p.data, data)
		p.layers = append(p.layers, l)
	}
	blobPath := func(d digest.Digest) string { return "blobs/sha256/" + d.Encoded() }

	name := img.Registry + "/" + img.Repository
	save := struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{Config: blobPath(img.ConfigDigest), RepoTags: []string{}, Layers: []string{}}
	repositories := map[string]map[string]string{}
	if tag != "" {
		save.RepoTags = append(save.RepoTags, name+":"+tag)
		if n := len(img.Layers); n > 0 {
			repositories[name] = map[string]string{tag: img.Layers[n-1].Digest.Encoded()}
		}
	}
	for _, l := range img.Layers {
		save.Layers = append(save.Layers, blobPath(l.Digest))
	}
	manifest, err := json.Marshal([]any{save})
	if err != nil {
		return nil, fmt.Errorf("image.tar manifest.json: %w", err)
	}
	repos, err := json.Marshal(repositories)
	if err != nil {
		return nil, fmt.Errorf("image.tar repositories: %w", err)
	}

	add("manifest.json", int64(len(manifest)), manifest, nil)
	add("repositories", int64(len(repos)), repos, nil)
	add("blobs/", 0, nil, nil)
	add("blobs/sha256/", 0, nil, nil)
	add(blobPath(img.ConfigDigest), int64(len(img.Config)), img.Config, nil)
	seen := map[string]bool{blobPath(img.ConfigDigest): true}
	for _, l := range img.Layers {
		if path := blobPath(l.Digest); !seen[path] {
			seen[path] = true
			add(path, l.Size, nil, t.layerRef(img.Repository, l))
		}
	}
	if p.layout, err = tarlayout.New(hdrs); err != nil {
		return nil, fmt.Errorf("image.tar: %w", err)
	}
	return p, nil
}

// fill: the size comes from the plan, which needs no I/O.
func (f *imageTarFile) fill(_ context.Context, a *fuse.Attr) error {
	p, err := f.planned()
	if err != nil {
		return err
	}
	fileAttr(a, p.layout.Size(), f.img.Created)
	return nil
}

func (f *imageTarFile) attrTTL() time.Duration { return immutableTTL }

func (f *imageTarFile) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return f.t.getattr(ctx, f, out)
}

func (f *imageTarFile) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	p, err := f.planned()
	if err != nil {
		return nil, 0, f.t.errno("open", &f.Inode, err)
	}
	return &imageTarHandle{f: f, plan: p, open: map[int]openBlob{}}, fuse.FOPEN_KEEP_CACHE, 0
}

// imageTarHandle is one open image.tar: each layer's blob is opened when a
// read first reaches it, with a reader of its own (readahead state) kept
// until release.
type imageTarHandle struct {
	f    *imageTarFile
	plan *imageTarPlan

	mu   sync.Mutex // guards open; reads run concurrently
	open map[int]openBlob
}

// openBlob is a layer's stored bytes, open; closed by release (nil: no
// cache reader to close).
type openBlob struct {
	r       blobio.ReaderAt
	release func()
}

var (
	_ = (gofs.FileReader)((*imageTarHandle)(nil))
	_ = (gofs.FileReleaser)((*imageTarHandle)(nil))
)

// blob is member i's open layer blob.
func (h *imageTarHandle) blob(ctx context.Context, i int) (blobio.ReaderAt, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open == nil {
		return nil, fmt.Errorf("image.tar read after release")
	}
	if b, ok := h.open[i]; ok {
		return b.r, nil
	}
	ref := h.plan.layers[i]
	cached, direct, err := ref.openStored(ctx)
	if err != nil {
		return nil, err
	}
	b := openBlob{r: direct}
	if cached != nil {
		b = openBlob{r: cached, release: func() { cached.Close() }}
	}
	if want := ref.l.Descriptor().Size; b.r.Size() != want {
		if b.release != nil {
			b.release()
		}
		return nil, fmt.Errorf("blob %s is %d bytes, its manifest says %d", ref.l.Descriptor().Digest, b.r.Size(), want)
	}
	h.open[i] = b
	return b.r, nil
}

func (h *imageTarHandle) content(ctx context.Context) tarlayout.ContentFunc {
	return func(i int, p []byte, off int64) error {
		if h.plan.layers[i] == nil {
			copy(p, h.plan.data[i][off:])
			return nil
		}
		r, err := h.blob(ctx, i)
		if err != nil {
			return err
		}
		if n, err := r.ReadAt(ctx, p, off); n < len(p) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("blob of layer %s: %d of %d bytes at %d: %w", h.plan.layers[i].l.Descriptor().ID, n, len(p), off, err)
		}
		return nil
	}
}

func (h *imageTarHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	t := h.f.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	n, err := h.plan.layout.ReadAt(dest, off, h.content(ctx))
	if err != nil && err != io.EOF {
		return nil, t.errno("read", &h.f.Inode, fmt.Errorf("image.tar at %d: %w", off, err))
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *imageTarHandle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.open {
		if b.release != nil {
			b.release()
		}
	}
	h.open = nil
	return 0
}
