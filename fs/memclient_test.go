package fs

// memClient is a small in-memory registry.Client for the node tests, used
// until the real v2 client and registrytest land; the mount tests use the
// real registry.

import (
	"github.com/regfs/regfs/blobio"

	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry"
)

type memClient struct {
	host, api  string
	noCatalog  bool
	catalogErr error // what Catalog returns, if set

	mu       sync.Mutex
	images   map[string]map[string]*registry.Image // repo → tag or digest → image
	blobs    map[string][]byte                     // digest → bytes
	failWith map[string]error                      // repo → error every call returns

	resolves, tagCalls, catalogCalls, blobOpens atomic.Int64
}

func newMemClient() *memClient {
	return &memClient{host: "mem.test:5000", api: registry.APIV2,
		images: map[string]map[string]*registry.Image{}, blobs: map[string][]byte{}, failWith: map[string]error{}}
}

func (c *memClient) Host() string { return c.host }
func (c *memClient) API() string  { return c.api }

func (c *memClient) Catalog(ctx context.Context) ([]string, error) {
	c.catalogCalls.Add(1)
	if c.catalogErr != nil {
		return nil, c.catalogErr
	}
	if c.noCatalog {
		return []string{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for r := range c.images {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

func (c *memClient) Tags(ctx context.Context, repo string) ([]string, error) {
	c.tagCalls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failWith[repo]; err != nil {
		return nil, err
	}
	refs, ok := c.images[repo]
	if !ok {
		return nil, fmt.Errorf("tags of %s: %w", repo, registry.ErrNotFound)
	}
	var tags []string
	for r := range refs {
		if !strings.Contains(r, ":") {
			tags = append(tags, r)
		}
	}
	sort.Strings(tags)
	return tags, nil
}

func (c *memClient) Resolve(ctx context.Context, repo, ref string, p registry.Platform) (*registry.Image, error) {
	c.resolves.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failWith[repo]; err != nil {
		return nil, err
	}
	img, ok := c.images[repo][ref]
	if !ok {
		return nil, fmt.Errorf("resolve %s:%s: %w", repo, ref, registry.ErrNotFound)
	}
	if img.Index == nil {
		return img, nil
	}
	// An index: pick the platform, as the real client does.
	out := *img
	out.Manifest, out.ManifestDigest, out.Config, out.ConfigDigest, out.Layers = nil, "", nil, "", nil
	for _, pm := range img.Platforms {
		if pm.Platform == p {
			sel := c.images[repo][pm.Digest.String()]
			out.Manifest, out.ManifestDigest, out.ManifestMediaType = sel.Manifest, sel.ManifestDigest, sel.ManifestMediaType
			out.Config, out.ConfigDigest, out.Layers, out.Created, out.Platform = sel.Config, sel.ConfigDigest, sel.Layers, sel.Created, p
			break
		}
	}
	return &out, nil
}

func (c *memClient) OpenBlob(ctx context.Context, repo string, l registry.Layer) (blobio.Source, error) {
	c.blobOpens.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.blobs[l.Digest.String()]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", l.Digest, registry.ErrNotFound)
	}
	return &memBlob{key: l.Digest.String(), data: b}, nil
}

type memBlob struct {
	key   string
	data  []byte
	reads atomic.Int64
}

func (b *memBlob) Key() string { return b.key }

// Origin is local: the test's bytes are trusted by their key.
func (b *memBlob) Origin() blobio.Origin { return blobio.Origin{} }
func (b *memBlob) Size() int64           { return int64(len(b.data)) }
func (b *memBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	b.reads.Add(1)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off >= int64(len(b.data)) {
		return 0, io.EOF
	}
	n := copy(p, b.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (b *memBlob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	end := int64(len(b.data))
	if n >= 0 {
		end = min(end, off+n)
	}
	return io.NopCloser(bytes.NewReader(b.data[off:end])), nil
}

// testFile is one entry of a test layer.
type testFile struct {
	name, body string
	typ        byte
	mode       int64  // default 0644 (0755 for dirs)
	link       string // symlink or hardlink target
	xattrs     map[string]string
	major      int64
	rootOwned  bool // uid and gid 0 (default 1000 and 100)
}

func tarOf(t testing.TB, files []testFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		uid, gid := 1000, 100
		if f.rootOwned {
			uid, gid = 0, 0
		}
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(1700000000, 0),
			Linkname: f.link, Uid: uid, Gid: gid, Devmajor: f.major, Devminor: 3, Format: tar.FormatPAX}
		if f.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if f.mode != 0 {
			h.Mode = f.mode
		}
		for k, v := range f.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(f.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testImage is what addImage pushed, for comparisons.
type testImage struct {
	img    *registry.Image
	tars   [][]byte // uncompressed layers, base first
	blobs  [][]byte // stored layers
	config []byte
}

// addImage builds a v2 image of gzip layers and stores it under repo:tag
// and repo@digest.
func (c *memClient) addImage(t testing.TB, repo, tag string, p registry.Platform, layers ...[]testFile) testImage {
	t.Helper()
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	var ti testImage
	var diffIDs []digest.Digest
	var descs []map[string]any
	for _, files := range layers {
		raw := tarOf(t, files)
		gz := gzipOf(t, raw)
		ti.tars = append(ti.tars, raw)
		ti.blobs = append(ti.blobs, gz)
		diffIDs = append(diffIDs, digest.FromBytes(raw))
		d := digest.FromBytes(gz)
		descs = append(descs, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(gz)})
	}
	cfg, _ := json.Marshal(map[string]any{
		"created": created, "architecture": p.Architecture, "os": p.OS,
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	ti.config = cfg
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(cfg), "size": len(cfg)},
		"layers": descs,
	})
	img := &registry.Image{
		Registry: c.host, Repository: repo, Reference: tag, API: registry.APIV2,
		Manifest: man, ManifestDigest: digest.FromBytes(man), ManifestMediaType: "application/vnd.oci.image.manifest.v1+json",
		Platform: p, Config: cfg, ConfigDigest: digest.FromBytes(cfg), Created: created,
	}
	chain := digest.Digest("")
	for i, gz := range ti.blobs {
		if chain == "" {
			chain = diffIDs[i]
		} else {
			chain = digest.FromString(chain.String() + " " + diffIDs[i].String())
		}
		js, _ := json.Marshal(map[string]any{"id": chain.Encoded(), "created": created})
		img.Layers = append(img.Layers, registry.Layer{
			ID: chain.Encoded(), Digest: digest.FromBytes(gz), DiffID: diffIDs[i],
			MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Size: int64(len(gz)), JSON: js,
		})
	}
	ti.img = img
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, gz := range ti.blobs {
		c.blobs[img.Layers[i].Digest.String()] = gz
	}
	if c.images[repo] == nil {
		c.images[repo] = map[string]*registry.Image{}
	}
	if tag != "" {
		c.images[repo][tag] = img
	}
	c.images[repo][img.ManifestDigest.String()] = img
	return ti
}

// addIndex stores an index over the given images (already added under
// repo by digest) as repo:tag.
func (c *memClient) addIndex(t testing.TB, repo, tag string, imgs ...testImage) *registry.Image {
	t.Helper()
	var ms []map[string]any
	var pms []registry.PlatformManifest
	for _, ti := range imgs {
		p := ti.img.Platform
		ms = append(ms, map[string]any{"mediaType": ti.img.ManifestMediaType, "digest": ti.img.ManifestDigest, "size": len(ti.img.Manifest),
			"platform": map[string]any{"os": p.OS, "architecture": p.Architecture, "variant": p.Variant}})
		pms = append(pms, registry.PlatformManifest{Platform: p, Digest: ti.img.ManifestDigest, MediaType: ti.img.ManifestMediaType, Size: int64(len(ti.img.Manifest))})
	}
	raw, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ms})
	idx := &registry.Image{Registry: c.host, Repository: repo, Reference: tag, API: registry.APIV2,
		Index: raw, IndexDigest: digest.FromBytes(raw), Platforms: pms}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.images[repo][tag] = idx
	c.images[repo][idx.IndexDigest.String()] = idx
	return idx
}
