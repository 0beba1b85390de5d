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
