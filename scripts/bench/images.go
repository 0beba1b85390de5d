package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// Repository and tags of the benchmark images.
const (
	benchRepo  = "bench/files"
	tagLarge   = "large"   // one big gzip layer: the blob and layer.tar rows
	tagGzip    = "gzip"    // that layer plus a layer of many small files
	tagEStargz = "estargz" // the same two layers as eStargz
)

// imageSet is what was pushed, with what the rows need to know about it.
type imageSet struct {
	large, gzip, estargz *registrytest.Image

	// files are the regular files of the merged rootfs (same for gzip and
	// eStargz), sorted by path; target is the small file the first-read
	// rows cat.
	files  []fileInfo
	target fileInfo
}

type fileInfo struct {
	path string // relative to rootfs/
	size int64
	data func() []byte
}

// imageBytes is the total a full pull downloads: manifest, config and
// every layer blob.
func imageBytes(img *registrytest.Image) int64 {
	n := int64(len(img.Manifest) + len(img.Config))
	for _, l := range img.Layers {
		n += l.Size
	}
	return n
}

// smallFileEntries are n small files (64 B–16 KiB, log-uniform, 70 %
// compressible text-like) in directories of 100, under srv/bench/: the
// shape of a package tree, where a user wants one file out of thousands.
func smallFileEntries(n int, seed uint64) []registrytest.Entry {
	entries := []registrytest.Entry{registrytest.Dir("srv"), registrytest.Dir("srv/bench")}
	state := seed
	next := func() uint64 { // splitmix64: reproducible on every machine
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	for i := 0; i < n; i++ {
		if i%100 == 0 {
			entries = append(entries, registrytest.Dir(fmt.Sprintf("srv/bench/d%03d", i/100)))
		}
		exp := 6 + float64(next()%(8<<16))/float64(1<<16) // 2^6 … 2^14
		size := int64(math.Pow(2, exp))
		compressible := next()%10 < 7
		ext := ".bin"
		if compressible {
			ext = ".txt"
		}
		name := fmt.Sprintf("srv/bench/d%03d/f%05d%s", i/100, i, ext)
		entries = append(entries, registrytest.GeneratedFile(name, size, seed*1_000_000+uint64(i), compressible))
	}
	return entries
}

// layerMeta is the sidecar of a cached benchmark layer blob; its presence
// means the blob beside it is whole.
type layerMeta struct {
	Digest           digest.Digest     `json:"digest"`
	Size             int64             `json:"size"`
	DiffID           digest.Digest     `json:"diffID"`
	UncompressedSize int64             `json:"uncompressedSize"`
	Annotations      map[string]string `json:"annotations,omitempty"`
}

// cacheFormat names the layout of cached benchmark layers; bump it when
// smallFileEntries or the layer recipe changes.
const cacheFormat = 1

// cachedLayer builds a layer once and keeps it under dir (next to
// registrytest's own large-layer cache), so later runs skip the build.
func cachedLayer(dir, key string, entries []registrytest.Entry, c registrytest.Compression, createdBy string) (*registrytest.Layer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	base := filepath.Join(dir, fmt.Sprintf("bench-v%d-%s", cacheFormat, key))
	l := &registrytest.Layer{Entries: entries, Compression: c, CreatedBy: createdBy, BlobPath: base + ".blob"}
	if raw, err := os.ReadFile(base + ".json"); err == nil {
		var m layerMeta
		if json.Unmarshal(raw, &m) == nil && m.Digest.Validate() == nil {
			if fi, err := os.Stat(l.BlobPath); err == nil && fi.Size() == m.Size {
				l.Digest, l.Size, l.DiffID, l.UncompressedSize, l.Annotations = m.Digest, m.Size, m.DiffID, m.UncompressedSize, m.Annotations
				return l, nil
			}
		}
	}
	built, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries, Compression: c, CreatedBy: createdBy})
	if err != nil {
		return nil, fmt.Errorf("build layer %s: %w", key, err)
	}
	if err := writeAtomic(l.BlobPath, built.Blob); err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	meta, err := json.Marshal(layerMeta{Digest: built.Digest, Size: built.Size, DiffID: built.DiffID,
		UncompressedSize: built.UncompressedSize, Annotations: built.Annotations})
	if err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	if err := writeAtomic(base+".json", meta); err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	l.Digest, l.Size, l.DiffID, l.UncompressedSize, l.Annotations = built.Digest, built.Size, built.DiffID, built.UncompressedSize, built.Annotations
	return l, nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// buildImages builds (or loads from the cache) the benchmark images.
func buildImages(cfg config) (*imageSet, error) {
	const largeSeed, filesSeed = 7, 11
	largeSize := cfg.largeMB << 20
	logf("building images: large layer %d MiB of content, %d small files", cfg.largeMB, cfg.files)
	base, err := registrytest.BuildLargeLayer(largeSeed, largeSize)
	if err != nil {
		return nil, err
	}
	dir := registrytest.LargeCacheDir()
	small := smallFileEntries(cfg.files, filesSeed)
	smallGz, err := cachedLayer(dir, fmt.Sprintf("small-gzip-n%d-seed%d", cfg.files, filesSeed), small, registrytest.Gzip, "ADD srv/bench")
	if err != nil {
		return nil, err
	}
	baseSz, err := cachedLayer(dir, fmt.Sprintf("large-estargz-seed%d-size%d", largeSeed, largeSize),
		registrytest.LargeEntries(largeSeed, largeSize), registrytest.EStargz, base.CreatedBy)
	if err != nil {
		return nil, err
	}
	smallSz, err := cachedLayer(dir, fmt.Sprintf("small-estargz-n%d-seed%d", cfg.files, filesSeed), small, registrytest.EStargz, "ADD srv/bench")
	if err != nil {
		return nil, err
	}
	set := &imageSet{}
	if set.large, err = registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{base}}); err != nil {
		return nil, err
	}
	if set.gzip, err = registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{base, smallGz}}); err != nil {
		return nil, err
	}
	if set.estargz, err = registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{baseSz, smallSz}}); err != nil {
		return nil, err
	}

	for p, e := range set.gzip.RootFS() {
		if e.Type != tar.TypeReg {
			continue
		}
		set.files = append(set.files, fileInfo{path: p, size: e.Size(), data: e.Data})
	}
	sort.Slice(set.files, func(i, j int) bool { return set.files[i].path < set.files[j].path })
	var smalls []fileInfo
	for _, f := range set.files {
		if strings.HasPrefix(f.path, "srv/bench/") && f.size >= 1024 && f.size <= 8192 {
			smalls = append(smalls, f)
		}
	}
	if len(smalls) == 0 {
		return nil, fmt.Errorf("no small file of 1–8 KiB among %d files", len(set.files))
	}
	set.target = smalls[len(smalls)/2]
	return set, nil
}

// push pushes the three images to the registry.
func push(ctx context.Context, reg *registrytest.Registry, set *imageSet) error {
	p := registrytest.NewPusher(reg)
	for _, im := range []struct {
		tag string
		img *registrytest.Image
	}{{tagLarge, set.large}, {tagGzip, set.gzip}, {tagEStargz, set.estargz}} {
		if err := p.PushImage(ctx, benchRepo, im.img, im.tag); err != nil {
			return fmt.Errorf("push %s:%s: %w", benchRepo, im.tag, err)
		}
	}
	return nil
}

// chainIDs are the layer IDs the mount shows under layers/: the hex of
// each layer's OCI ChainID.
func chainIDs(img *registrytest.Image) []string {
	var ids []string
	var chain digest.Digest
	for i, d := range img.DiffIDs {
		if i == 0 {
			chain = d
		} else {
			chain = digest.FromString(chain.String() + " " + d.String())
		}
		ids = append(ids, chain.Encoded())
	}
	return ids
}
