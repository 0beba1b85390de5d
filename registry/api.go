package registry

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/blobio"
)

// API names the registry protocol a Client speaks.
const (
	APIAuto = "auto" // probe v2, fall back to v1
	APIV2   = "v2"
	APIV1   = "v1"
)

// Client is one registry, whichever API it speaks. All methods are safe for
// concurrent use and take the caller's context first; cancellation ends any
// retry loop at once.
type Client interface {
	// Host is the registry host[:port] this client talks to.
	Host() string
	// API is APIV2 or APIV1: the protocol chosen after probing.
	API() string
	// Catalog lists repository names, sorted. A registry that does not offer a
	// catalog (401/403/404, as Docker Hub) yields an empty list and no error.
	Catalog(ctx context.Context) ([]string, error)
	// Tags lists the tags of repo, sorted. ErrNotFound if repo is unknown.
	Tags(ctx context.Context, repo string) ([]string, error)
	// Resolve fetches the image that ref (a tag or a digest string) names in
	// repo, with everything needed to show it: raw manifest (and index), raw
	// config, and the layer list. For an index, the platform closest to
	// platform is selected; if none matches, Image.Manifest is nil and only
	// Index/Platforms are set.
	Resolve(ctx context.Context, repo, ref string, platform Platform) (*Image, error)
	// OpenBlob returns a handle on layer l of an image in repo. It may do a
	// HEAD request when l.Size is unknown. Its Key is the digest string for
	// v2 blobs, "v1:<host>/<image id>" for v1 layers; ReadAt and Open resume
	// dropped connections.
	OpenBlob(ctx context.Context, repo string, l Layer) (blobio.Source, error)
}

// ContentStore keeps digest-addressed metadata (manifests, indexes, image
// configs) across runs, so a Client resolves a digest it has seen without
// asking the registry: Options.Content.
type ContentStore interface {
	// Content returns the bytes stored under d, already checked to hash to
	// d; ok is false when nothing (or nothing that hashes to d) is stored.
	Content(d digest.Digest) (b []byte, ok bool)
	// PutContent stores b, which the caller has checked hashes to d. A
	// store that fails to write only loses the chance to serve it later.
	PutContent(d digest.Digest, b []byte)
}

// Image is what Resolve returns. Raw byte slices are exactly as served.
type Image struct {
	Registry   string
	Repository string
	Reference  string // the tag or digest asked for
	API        string // APIV2 or APIV1

	// Index is set when Reference named a multi-platform index (raw bytes).
	Index       []byte
	IndexDigest digest.Digest
	Platforms   []PlatformManifest // index entries, in index order

	// Manifest is the selected single-platform manifest (v2), raw bytes, and
	// its verified digest. Nil for v1, and for an index with no match.
	Manifest          []byte
	ManifestDigest    digest.Digest
	ManifestMediaType string
	Platform          Platform // of the selected manifest, when known

	// Config is the image config blob (v2), raw bytes, verified.
	Config       []byte
	ConfigDigest digest.Digest

	Created time.Time // from the config (v2) or the top layer's JSON (v1); zero if unknown

	// Layers, base first. For v1 these come from the ancestry.
	Layers []Layer
}

// PlatformManifest is one entry of an index.
type PlatformManifest struct {
	Platform  Platform
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// Layer is one layer of an image, in the terms both APIs share.
type Layer struct {
	// ID is the v1 image ID, or for v2 the hex of the layer's OCI ChainID
	// computed from the config's diff_ids, so ancestry names it.
	ID string
	// Digest is the blob digest (v2). Empty for v1.
	Digest digest.Digest
	// DiffID is the uncompressed digest (v2 config diff_ids). Empty for v1.
	DiffID    digest.Digest
	MediaType string
	// Size is the stored (compressed) size, -1 when unknown.
	Size int64
	// JSON is the layer's v1 image JSON: as served (v1), or the
	// v1-compatible JSON that `docker save` writes (v2).
	JSON []byte
	// Checksum is the v1 checksum (tarsum) the repository lists, if any.
	Checksum    string
	Annotations map[string]string
	// URLs lists foreign-layer URLs from the descriptor, if any.
	URLs []string
}

// Ancestry returns the layer IDs top first, as the v1 ancestry endpoint does.
func (img *Image) Ancestry() []string {
	ids := make([]string, 0, len(img.Layers))
	for i := len(img.Layers) - 1; i >= 0; i-- {
		ids = append(ids, img.Layers[i].ID)
	}
	return ids
}
