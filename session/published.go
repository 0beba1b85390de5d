package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// The published layer index artifact (README, "Published layer indexes"):
// an OCI image manifest of artifactType IndexArtifactType whose subject is
// the image manifest, with the empty config and one blob per gzip layer of
// the image: that layer's index in layerindex's persisted format, of media
// type IndexBlobMediaType, annotated with the layer's digest and the
// format's version.
const (
	IndexArtifactType  = "application/vnd.regfs.layer-index.v1"
	IndexBlobMediaType = "application/vnd.regfs.layer-index.v1.layer"
	// AnnotationLayerDigest names the image layer an index blob is for.
	AnnotationLayerDigest = "io.regfs.layer.digest"
	// AnnotationIndexFormat is the version of the persisted index format
	// the blob holds (layerindex.PersistVersion).
	AnnotationIndexFormat = "io.regfs.layer-index.format"
)

// emptyJSON is the OCI empty descriptor's content, the artifact's config.
var emptyJSON = []byte("{}")

// maxReferrersTried bounds the index artifacts of one image read before
// giving up on finding a usable one.
const maxReferrersTried = 4

// publishedLookup finds the published index of a layer of an image: one
// referrers lookup (and artifact manifest) per image, its answer, found or
// not, kept for the TTL; each index blob fetched once, by its layer.
type publishedLookup struct {
	client registry.Artifacts
	blobs  registry.Client // opens the index blobs, read in ranges
	ttl    time.Duration
	now    func() time.Time

	mu     sync.Mutex
	images map[string]*publishedImage // "<repo>@<subject>"
	flight singleflight.Group
}

// publishedImage is one image's lookup: the index blobs by layer digest.
type publishedImage struct {
	at     time.Time
	blobs  map[digest.Digest]ocispec.Descriptor
	err    error
	source digest.Digest // the artifact manifest they came from
}

// indexOf opens the published index of layer in repo's image subject, nil
// if there is none. It is read in ranges, straight from the registry (not
// through the block cache: its reads are few, small and far apart).
func (p *publishedLookup) indexOf(ctx context.Context, repo string, subject, layer digest.Digest) (blobio.ReaderAt, error) {
	im, err := p.image(ctx, repo, subject)
	if err != nil {
		return nil, err
	}
	d, ok := im.blobs[layer]
	if !ok {
		return nil, nil
	}
	b, err := p.blobs.OpenBlob(ctx, repo, registry.Layer{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType})
	if err != nil {
		return nil, fmt.Errorf("published index of layer %s (%s): %w", layer, im.source, err)
	}
	return b, nil
}

// image returns the lookup of repo@subject, asking the registry when the
// kept one is older than the TTL. A failed lookup is kept as well: its
// error is the answer until the TTL passes.
func (p *publishedLookup) image(ctx context.Context, repo string, subject digest.Digest) (*publishedImage, error) {
	key := repo + "@" + subject.String()
	p.mu.Lock()
	im := p.images[key]
	p.mu.Unlock()
	if im == nil || p.now().Sub(im.at) >= p.ttl {
		ch := p.flight.DoChan(key, func() (any, error) {
			im := p.lookup(context.WithoutCancel(ctx), repo, subject)
			p.mu.Lock()
			p.images[key] = im
			p.mu.Unlock()
			return im, nil
		})
		select {
		case r := <-ch:
			im = r.Val.(*publishedImage)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return im, im.err
}

// lookup asks for the image's index artifacts and reads the first usable
// one's manifest.
func (p *publishedLookup) lookup(ctx context.Context, repo string, subject digest.Digest) *publishedImage {
	im := &publishedImage{at: p.now(), blobs: map[digest.Digest]ocispec.Descriptor{}}
	refs, err := p.client.Referrers(ctx, repo, subject, IndexArtifactType)
	if err != nil {
		im.err = fmt.Errorf("published indexes of %s@%s: %w", repo, subject, err)
		return im
	}
	var errs []error
	// The last listed is taken first: a tag schema index lists the latest push last.
	for i := len(refs) - 1; i >= 0 && i >= len(refs)-maxReferrersTried; i-- {
		raw, err := p.client.Manifest(ctx, repo, refs[i].Digest)
		if err == nil {
			var blobs map[digest.Digest]ocispec.Descriptor
			if blobs, err = parseIndexArtifact(raw, subject); err == nil {
				im.blobs, im.source = blobs, refs[i].Digest
				return im
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", refs[i].Digest, err))
	}
	if len(errs) > 0 {
		im.err = fmt.Errorf("published indexes of %s@%s: none usable: %w", repo, subject, errors.Join(errs...))
	}
	return im
}

// parseIndexArtifact reads an index artifact manifest made for subject and
// returns its blobs by layer digest. Blobs of another format version are
// left out (a reader of this version cannot parse them).
func parseIndexArtifact(raw []byte, subject digest.Digest) (map[digest.Digest]ocispec.Descriptor, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("index artifact: %w", err)
	}
	if m.ArtifactType != IndexArtifactType || m.Subject == nil || m.Subject.Digest != subject {
		return nil, fmt.Errorf("index artifact: artifactType %q, subject %v: not ours for %s", m.ArtifactType, m.Subject, subject)
	}
	version := strconv.Itoa(layerindex.PersistVersion)
	blobs := map[digest.Digest]ocispec.Descriptor{}
	for _, l := range m.Layers {
		ld, err := digest.Parse(l.Annotations[AnnotationLayerDigest])
		if err != nil || l.MediaType != IndexBlobMediaType || l.Annotations[AnnotationIndexFormat] != version ||
			l.Digest.Validate() != nil || l.Size < 0 || l.Size > layerindex.MaxPublishedIndexSize {
			continue
		}
		blobs[ld] = l
	}
	if len(blobs) == 0 {
		return nil, fmt.Errorf("index artifact: no layer index of format %s", version)
	}
	return blobs, nil
}

// publishedFor returns the Published hook of layer l of img, nil when
// published indexes are off or the image has no manifest digest (v1).
func (s *Session) publishedFor(img *registry.Image, l registry.Layer) func(context.Context) (blobio.ReaderAt, error) {
	if s.published == nil || img.ManifestDigest == "" || l.Digest == "" {
		return nil
	}
	repo, subject, layer := img.Repository, img.ManifestDigest, l.Digest
	return func(ctx context.Context) (blobio.ReaderAt, error) {
		return s.published.indexOf(ctx, repo, subject, layer)
	}
}

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
