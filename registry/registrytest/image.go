package registrytest

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultCreated is the config "created" time of images that do not set
// one, so builds are reproducible.
var DefaultCreated = time.Date(2022, 3, 4, 5, 6, 7, 0, time.UTC)

// ImageSpec describes an image to build.
type ImageSpec struct {
	// Format defaults to FormatOCI.
	Format ManifestFormat
	// Platform defaults to linux/amd64.
	Platform ocispec.Platform
	// Created defaults to DefaultCreated.
	Created time.Time
	Author  string
	// Layers, base first.
	Layers []*Layer
	// History defaults to one entry per layer (its CreatedBy). When given,
	// its entries without EmptyLayer must match Layers one for one.
	History []ocispec.History
	// Config is the runtime config (Env, Cmd, Labels…).
	Config ocispec.ImageConfig
	// Annotations go on the manifest (OCI only).
	Annotations map[string]string
}

// Image is a built image: the exact bytes pushed, and their digests.
type Image struct {
	Format    ManifestFormat
	MediaType string // of the manifest
	Platform  ocispec.Platform

	Manifest []byte
	Digest   digest.Digest // of Manifest

	Config       []byte
	ConfigDigest digest.Digest
	// ConfigMediaType is the config descriptor's media type.
	ConfigMediaType string

	Layers []*Layer
	// LayerDescriptors are the manifest's layer descriptors (media type,
	// digest, size, annotations), base first.
	LayerDescriptors []ocispec.Descriptor
	// DiffIDs are the config's rootfs.diff_ids.
	DiffIDs []digest.Digest
}

// Descriptor is the image's descriptor as an index entry.
func (img *Image) Descriptor() ocispec.Descriptor {
	p := img.Platform
	return ocispec.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: int64(len(img.Manifest)), Platform: &p}
}

// RootFS is the image's merged file tree (see MergeLayers).
func (img *Image) RootFS() map[string]Entry {
	sets := make([][]Entry, len(img.Layers))
	for i, l := range img.Layers {
		sets[i] = l.Entries
	}
	return MergeLayers(sets...)
}

// BuildImage makes the config and manifest of an image from built layers.
func BuildImage(spec ImageSpec) (*Image, error) {
	img := &Image{Format: spec.Format, Platform: spec.Platform, Layers: spec.Layers}
	if img.Format == "" {
		img.Format = FormatOCI
	}
	if img.Platform.OS == "" {
		img.Platform.OS = "linux"
	}
	if img.Platform.Architecture == "" {
		img.Platform.Architecture = "amd64"
	}
	created := spec.Created
	if created.IsZero() {
		created = DefaultCreated
	}
	history := spec.History
	if history == nil {
		for _, l := range spec.Layers {
			history = append(history, ocispec.History{Created: &created, CreatedBy: l.CreatedBy})
		}
	}
	nonEmpty := 0
	for _, h := range history {
		if !h.EmptyLayer {
			nonEmpty++
		}
	}
	if nonEmpty != len(spec.Layers) {
		return nil, fmt.Errorf("build image: %d non-empty history entries for %d layers", nonEmpty, len(spec.Layers))
	}

	cfg := ocispec.Image{
		Created:  &created,
		Author:   spec.Author,
		Platform: img.Platform,
		Config:   spec.Config,
		RootFS:   ocispec.RootFS{Type: "layers"},
		History:  history,
	}
	layerType := func(l *Layer) string { return l.MediaType(img.Format) }
	img.MediaType, img.ConfigMediaType = MediaTypeOCIManifest, MediaTypeOCIConfig
	if img.Format == FormatDocker {
		img.MediaType, img.ConfigMediaType = MediaTypeDockerManifest, MediaTypeDockerConfig
	} else if img.Format != FormatOCI {
		return nil, fmt.Errorf("build image: unknown format %q", img.Format)
	}
	for i, l := range spec.Layers {
		mt := layerType(l)
		if mt == "" {
			return nil, fmt.Errorf("build image: layer %d: %w: %s compression in a %s manifest", i, errUnsupported, l.Compression, img.Format)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		img.LayerDescriptors = append(img.LayerDescriptors, ocispec.Descriptor{
			MediaType: mt, Digest: l.Digest, Size: l.Size, Annotations: l.Annotations,
		})
	}
	img.DiffIDs = cfg.RootFS.DiffIDs
	var err error
	img.Config, err = json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("build image: config: %w", err)
	}
	img.ConfigDigest = digest.FromBytes(img.Config)

	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: img.MediaType,
		Config:    ocispec.Descriptor{MediaType: img.ConfigMediaType, Digest: img.ConfigDigest, Size: int64(len(img.Config))},
		Layers:    img.LayerDescriptors,
	}
	if img.Format == FormatOCI {
		m.Annotations = spec.Annotations
	}
	if m.Layers == nil {
		m.Layers = []ocispec.Descriptor{}
	}
	img.Manifest, err = json.MarshalIndent(m, "", "   ")
	if err != nil {
		return nil, fmt.Errorf("build image: manifest: %w", err)
	}
	img.Digest = digest.FromBytes(img.Manifest)
	return img, nil
}

// Index is a built multi-platform index (OCI index or Docker manifest
// list) and its images.
type Index struct {
	Format    ManifestFormat
	MediaType string
	Manifest  []byte
	Digest    digest.Digest
	Images    []*Image
}

// BuildIndex makes an index over images, in order; their formats must match
// format (default OCI).
func BuildIndex(format ManifestFormat, annotations map[string]string, images ...*Image) (*Index, error) {
	if format == "" {
		format = FormatOCI
	}
	idx := &Index{Format: format, Images: images, MediaType: MediaTypeOCIIndex}
	if format == FormatDocker {
		idx.MediaType = MediaTypeDockerList
	}
	ix := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: idx.MediaType, Manifests: []ocispec.Descriptor{}}
	if format == FormatOCI {
		ix.Annotations = annotations
	}
	for i, img := range images {
		if img.Format != format {
			return nil, fmt.Errorf("build index: image %d is %s, index is %s", i, img.Format, format)
		}
		ix.Manifests = append(ix.Manifests, img.Descriptor())
	}
	var err error
	idx.Manifest, err = json.MarshalIndent(ix, "", "   ")
	if err != nil {
		return nil, fmt.Errorf("build index: %w", err)
	}
	idx.Digest = digest.FromBytes(idx.Manifest)
	return idx, nil
}

// MergeLayers applies layers (base first) as a container runtime does and
// returns the resulting tree keyed by clean path without a leading "/":
// whiteouts delete the lower path and everything under it, an opaque
// whiteout hides the lower contents of its directory, a new entry replaces
// the old one (a non-directory replacing a directory also removes the
// directory's children). Whiteout files themselves are not in the result.
// Parent directories missing from the tar are not invented.
func MergeLayers(layers ...[]Entry) map[string]Entry {
	tree := map[string]Entry{}
	removeUnder := func(dir string) {
		prefix := dir + "/"
		for p := range tree {
			if strings.HasPrefix(p, prefix) {
				delete(tree, p)
			}
		}
	}
	for _, entries := range layers {
		// Opaque and whiteout apply to the lower layers only, so collect
		// this layer's additions first.
		added := map[string]Entry{}
		for _, e := range entries {
			p := path.Clean(strings.TrimPrefix(e.Name, "/"))
			dir, base := path.Split(p)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == OpaqueWhiteout:
				removeUnder(dir)
			case strings.HasPrefix(base, WhiteoutPrefix):
				target := path.Join(dir, strings.TrimPrefix(base, WhiteoutPrefix))
				delete(tree, target)
				removeUnder(target)
			default:
				added[p] = e
			}
		}
		keys := make([]string, 0, len(added))
		for p := range added {
			keys = append(keys, p)
		}
		sort.Strings(keys)
		for _, p := range keys {
			e := added[p]
			if old, ok := tree[p]; ok && old.Type == tar.TypeDir && e.Type != tar.TypeDir {
				removeUnder(p)
			}
			tree[p] = e
		}
	}
	return tree
}
