package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// PushReport is what PublishIndexes pushed.
type PushReport struct {
	Manifest    digest.Digest // the index artifact
	Layers      int           // layers with an index in it
	IndexBytes  int64         // their size together
	BlobBytes   int64         // the size of those layers' blobs
	ReferrerAPI bool          // the registry took the subject (else the referrers tag schema)
}

// PublishIndexes builds (or loads from the cache dir) the index of every
// gzip layer of im and pushes them to the image's own repository as one
// index artifact whose subject is the image manifest (see the constants).
// onLayer, if set, is told each layer as it is done.
func (s *Session) PublishIndexes(ctx context.Context, im *Image, onLayer func(layer digest.Digest, indexBytes int, err error)) (PushReport, error) {
	var rep PushReport
	img := im.Descriptor()
	a, ok := registry.AsArtifacts(s.raw)
	if !ok || img.ManifestDigest == "" {
		return rep, fmt.Errorf("publish indexes of %s: only a v2 image manifest can be their subject", img.Repository)
	}
	if err := a.PushBlob(ctx, img.Repository, digest.FromBytes(emptyJSON), emptyJSON); err != nil {
		return rep, err
	}
	version := strconv.Itoa(layerindex.PersistVersion)
	var layers []ocispec.Descriptor
	for _, l := range im.Layers() {
		ix, err := l.Index(ctx)
		if err != nil {
			return rep, err
		}
		data, err := ix.PublishedIndex(ctx)
		if errors.Is(err, layerindex.ErrNothingToPublish) {
			if onLayer != nil {
				onLayer(l.Descriptor().Digest, 0, err)
			}
			continue
		}
		if err != nil {
			return rep, err
		}
		d := digest.FromBytes(data)
		if err := a.PushBlob(ctx, img.Repository, d, data); err != nil {
			return rep, err
		}
		layers = append(layers, ocispec.Descriptor{MediaType: IndexBlobMediaType, Digest: d, Size: int64(len(data)),
			Annotations: map[string]string{AnnotationLayerDigest: l.Descriptor().Digest.String(), AnnotationIndexFormat: version}})
		rep.Layers++
		rep.IndexBytes += int64(len(data))
		rep.BlobBytes += l.Descriptor().Size
		if onLayer != nil {
			onLayer(l.Descriptor().Digest, len(data), nil)
		}
	}
	if len(layers) == 0 {
		return rep, fmt.Errorf("publish indexes of %s@%s: no gzip layer: %w", img.Repository, img.ManifestDigest, layerindex.ErrNothingToPublish)
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: IndexArtifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       layers,
		Subject:      &ocispec.Descriptor{MediaType: img.ManifestMediaType, Digest: img.ManifestDigest, Size: int64(len(img.Manifest))},
	}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		return rep, fmt.Errorf("publish indexes: %w", err)
	}
	rep.Manifest = digest.FromBytes(raw)
	rep.ReferrerAPI, err = a.PushReferrer(ctx, img.Repository, img.ManifestDigest, ocispec.MediaTypeImageManifest, IndexArtifactType, raw)
	return rep, err
}
