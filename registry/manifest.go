package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types the client asks for and understands.
const (
	MediaTypeOCIIndex         = ocispec.MediaTypeImageIndex
	MediaTypeOCIManifest      = ocispec.MediaTypeImageManifest
	MediaTypeDockerList       = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest   = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerSchema1    = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1JWS = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeDockerConfig     = "application/vnd.docker.container.image.v1+json"
)

// manifestAccept lists every manifest type, schema 1 last and least
// preferred (read for its history only).
var manifestAccept = strings.Join([]string{
	MediaTypeOCIIndex,
	MediaTypeOCIManifest,
	MediaTypeDockerList,
	MediaTypeDockerManifest,
	MediaTypeDockerSchema1JWS + ";q=0.5",
	MediaTypeDockerSchema1 + ";q=0.5",
}, ", ")

const (
	// maxManifestSize bounds a manifest or index (the OCI spec asks
	// registries to accept at least 4 MiB).
	maxManifestSize = 8 << 20
	// maxConfigSize bounds an image config blob.
	maxConfigSize = 64 << 20
)

var hex64RE = regexp.MustCompile(`^[a-f0-9]{64}$`)

func isIndex(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }
func isSchema1(mt string) bool {
	return mt == MediaTypeDockerSchema1 || mt == MediaTypeDockerSchema1JWS
}

// fetchedManifest is a manifest exactly as served, with its verified digest.
type fetchedManifest struct {
	raw       []byte
	digest    digest.Digest
	mediaType string
}

// fetchManifest GETs the manifest ref (tag or digest) of repo and verifies
// its bytes: against ref when ref is a digest, and against
// Docker-Content-Digest when the registry sends one. Bytes that fail either
// are never returned (ErrDigestMismatch).
func (c *v2Client) fetchManifest(ctx context.Context, repo, ref string) (*fetchedManifest, error) {
	what := fmt.Sprintf("manifest %s/%s%s", c.host, repo, refSep(ref))
	var want digest.Digest
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("%s: bad digest: %w", what, err)
		}
		want = d
	} else if !tagRE.MatchString(ref) {
		return nil, fmt.Errorf("%s: bad tag %q: want [A-Za-z0-9_][A-Za-z0-9._-]{0,127} or a digest", what, ref)
	}
	if m := c.storedManifest(want); m != nil {
		return m, nil
	}
	resp, err := c.do(ctx, what, repoScope(repo), http.MethodGet, c.url("/v2/"+repo+"/manifests/"+ref),
		http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %w", what, newHTTPError(resp))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: read: %w", what, err)
	}
	if len(raw) > maxManifestSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", what, maxManifestSize)
	}
	if resp.ContentLength >= 0 && int64(len(raw)) != resp.ContentLength {
		return nil, fmt.Errorf("%s: got %d bytes, Content-Length says %d", what, len(raw), resp.ContentLength)
	}
	mt := manifestMediaType(resp.Header.Get("Content-Type"), raw)

	// Schema 1 signed manifests are digested without their signatures.
	content := raw
	if mt == MediaTypeDockerSchema1JWS {
		if content, err = schema1Payload(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	check := func(d digest.Digest, source string) error {
		if !d.Algorithm().Available() {
			return fmt.Errorf("%s: %s %s: unsupported digest algorithm", what, source, d)
		}
		if got := d.Algorithm().FromBytes(content); got != d {
			return &DigestError{What: what + " (" + source + ")", Want: d, Got: got}
		}
		return nil
	}
	got := digest.Canonical.FromBytes(content)
	if want != "" {
		if err := check(want, "requested digest"); err != nil {
			return nil, err
		}
		got = want
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		hd, perr := digest.Parse(h)
		if perr != nil {
			c.log.Debugf("%s: ignoring unparsable Docker-Content-Digest %q: %v", what, h, perr)
		} else {
			if err := check(hd, "Docker-Content-Digest"); err != nil {
				return nil, err
			}
			if want == "" {
				got = hd
			}
		}
	}
	c.storeManifest(raw, got, mt)
	return &fetchedManifest{raw: raw, digest: got, mediaType: mt}, nil
}

// storedManifest is manifest d from Options.Content, nil if it is not
// there (or d is empty). Only manifests whose body names their type are
// stored (storeManifest), so the type read back is the one served.
func (c *v2Client) storedManifest(d digest.Digest) *fetchedManifest {
	if c.opts.Content == nil || d == "" {
		return nil
	}
	raw, ok := c.opts.Content.Content(d)
	if !ok {
		return nil
	}
	mt := manifestMediaType("", raw)
	if mt == "" {
		return nil
	}
	return &fetchedManifest{raw: raw, digest: d, mediaType: mt}
}

// storeManifest keeps a fetched manifest in Options.Content when its bytes
// hash to d (a signed schema 1 manifest does not: its digest leaves out the
// signatures) and its body alone tells its media type mt.
func (c *v2Client) storeManifest(raw []byte, d digest.Digest, mt string) {
	if c.opts.Content == nil || !d.Algorithm().Available() || d.Algorithm().FromBytes(raw) != d {
		return
	}
	if manifestMediaType("", raw) != mt {
		return
	}
	c.opts.Content.PutContent(d, raw)
}

// refSep is ":tag" or "@digest".
func refSep(ref string) string {
	if strings.Contains(ref, ":") {
		return "@" + ref
	}
	return ":" + ref
}

// manifestMediaType takes the Content-Type when it names a manifest type,
// else the body's mediaType, else guesses from the body's shape (an OCI
// index or manifest may omit mediaType, and some servers say
// application/json).
func manifestMediaType(contentType string, raw []byte) string {
	if ct, _, err := mime.ParseMediaType(contentType); err == nil {
		switch ct {
		case MediaTypeOCIIndex, MediaTypeOCIManifest, MediaTypeDockerList, MediaTypeDockerManifest,
			MediaTypeDockerSchema1, MediaTypeDockerSchema1JWS:
			return ct
		}
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		Signatures    json.RawMessage `json:"signatures"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.SchemaVersion == 1 && probe.Signatures != nil:
		return MediaTypeDockerSchema1JWS
	case probe.SchemaVersion == 1:
		return MediaTypeDockerSchema1
	case probe.Manifests != nil:
		return MediaTypeOCIIndex
	case probe.Config != nil:
		return MediaTypeOCIManifest
	}
	return ""
}

// schema1Payload strips the JWS signatures from a signed schema 1
// manifest: the payload is the first formatLength bytes followed by
// formatTail, both from the first signature's protected header.
func schema1Payload(raw []byte) ([]byte, error) {
	var jws struct {
		Signatures []struct {
			Protected string `json:"protected"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &jws); err != nil {
		return nil, fmt.Errorf("schema 1 manifest: %w", err)
	}
	if len(jws.Signatures) == 0 {
		return raw, nil
	}
	prot, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(jws.Signatures[0].Protected, "="))
	if err != nil {
		return nil, fmt.Errorf("schema 1 manifest: protected header: %w", err)
	}
	var ph struct {
		FormatLength int    `json:"formatLength"`
		FormatTail   string `json:"formatTail"`
	}
	if err := json.Unmarshal(prot, &ph); err != nil {
		return nil, fmt.Errorf("schema 1 manifest: protected header: %w", err)
	}
	tail, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(ph.FormatTail, "="))
	if err != nil {
		return nil, fmt.Errorf("schema 1 manifest: formatTail: %w", err)
	}
	if ph.FormatLength < 0 || ph.FormatLength > len(raw) {
		return nil, fmt.Errorf("schema 1 manifest: formatLength %d outside %d bytes", ph.FormatLength, len(raw))
	}
	return append(append([]byte(nil), raw[:ph.FormatLength]...), tail...), nil
}

// fetchBlobBytes GETs a small blob whole (a config), checks its size
// (when known, size >= 0) and digest, and returns it.
func (c *v2Client) fetchBlobBytes(ctx context.Context, repo string, d digest.Digest, size, limit int64, what string) ([]byte, error) {
	if !d.Algorithm().Available() {
		return nil, fmt.Errorf("%s: bad or unsupported digest %q", what, d)
	}
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", what, size, limit)
	}
	if c.opts.Content != nil {
		if b, ok := c.opts.Content.Content(d); ok && (size < 0 || int64(len(b)) == size) && int64(len(b)) <= limit {
			return b, nil
		}
	}
	resp, err := c.do(ctx, what, repoScope(repo), http.MethodGet, c.url("/v2/"+repo+"/blobs/"+d.String()),
		http.Header{"Accept-Encoding": {"identity"}})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %w", what, newHTTPError(resp))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", what, limit)
	}
	if size >= 0 && int64(len(b)) != size {
		return nil, fmt.Errorf("%s: got %d bytes, descriptor says %d", what, len(b), size)
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		return nil, &DigestError{What: what, Want: d, Got: got}
	}
	if c.opts.Content != nil {
		c.opts.Content.PutContent(d, b)
	}
	return b, nil
}

// Resolve fetches what ref names in repo: the manifest (and the index, if
// ref names one, with the manifest selected for platform, the host's when
// zero), the config, and the layers with their IDs and v1 JSON.
func (c *v2Client) Resolve(ctx context.Context, repo, ref string, platform Platform) (*Image, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", repo, err)
	}
	if ref == "" {
		ref = DefaultTag
	}
	if platform == (Platform{}) {
		platform = HostPlatform()
	}
	img := &Image{Registry: c.host, Repository: repo, Reference: ref, API: APIV2}
	m, err := c.fetchManifest(ctx, rp, ref)
	if err != nil {
		return nil, fmt.Errorf("resolve %s/%s%s: %w", c.host, rp, refSep(ref), err)
	}
	if isIndex(m.mediaType) {
		var idx ocispec.Index
		if err := json.Unmarshal(m.raw, &idx); err != nil {
			return nil, fmt.Errorf("resolve %s/%s%s: decode index: %w", c.host, rp, refSep(ref), err)
		}
		img.Index, img.IndexDigest = m.raw, m.digest
		img.Platforms = indexPlatforms(idx)
		i := SelectPlatform(img.Platforms, platform)
		if i < 0 {
			return img, nil
		}
		sel := img.Platforms[i]
		img.Platform = sel.Platform
		if m, err = c.fetchManifest(ctx, rp, sel.Digest.String()); err != nil {
			return nil, fmt.Errorf("resolve %s/%s%s for %s: %w", c.host, rp, refSep(ref), platform, err)
		}
		if sel.Size >= 0 && int64(len(m.raw)) != sel.Size {
			return nil, fmt.Errorf("resolve %s/%s%s: manifest %s is %d bytes, the index says %d",
				c.host, rp, refSep(ref), sel.Digest, len(m.raw), sel.Size)
		}
		if isIndex(m.mediaType) {
			return nil, fmt.Errorf("resolve %s/%s%s: index entry %s is itself an index (nested indexes are not supported)",
				c.host, rp, refSep(ref), sel.Digest)
		}
	}
	img.Manifest, img.ManifestDigest, img.ManifestMediaType = m.raw, m.digest, m.mediaType
	switch {
	case isSchema1(m.mediaType):
		err = resolveSchema1(img)
	case m.mediaType == MediaTypeOCIManifest || m.mediaType == MediaTypeDockerManifest:
		err = c.resolveManifest(ctx, rp, img)
	default:
		err = fmt.Errorf("unsupported manifest media type %q", m.mediaType)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s/%s%s: %w", c.host, rp, refSep(ref), err)
	}
	return img, nil
}

// indexPlatforms lists an index's entries in order.
func indexPlatforms(idx ocispec.Index) []PlatformManifest {
	out := make([]PlatformManifest, 0, len(idx.Manifests))
	for _, d := range idx.Manifests {
		pm := PlatformManifest{Digest: d.Digest, MediaType: d.MediaType, Size: d.Size}
		if d.Platform != nil {
			pm.Platform = Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
		}
		out = append(out, pm)
	}
	return out
}

// imageConfig is the part of an image config Resolve uses.
type imageConfig struct {
	Created      json.RawMessage `json:"created"`
	OS           string          `json:"os"`
	Architecture string          `json:"architecture"`
	Variant      string          `json:"variant"`
	RootFS       *struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

// resolveManifest fills img from an OCI or Docker schema 2 manifest: the
// config (fetched, verified) and the layers.
func (c *v2Client) resolveManifest(ctx context.Context, repo string, img *Image) error {
	var m ocispec.Manifest
	if err := json.Unmarshal(img.Manifest, &m); err != nil {
		return fmt.Errorf("decode manifest %s: %w", img.ManifestDigest, err)
	}
	if m.Config.Digest == "" {
		return fmt.Errorf("manifest %s has no config", img.ManifestDigest)
	}
	cfg, err := c.fetchBlobBytes(ctx, repo, m.Config.Digest, m.Config.Size, maxConfigSize,
		fmt.Sprintf("config %s of %s/%s", m.Config.Digest, c.host, repo))
	if err != nil {
		return err
	}
	img.Config, img.ConfigDigest = cfg, m.Config.Digest
	var ic imageConfig
	if err := json.Unmarshal(cfg, &ic); err != nil && isImageConfig(m.Config.MediaType) {
		return fmt.Errorf("decode config %s: %w", m.Config.Digest, err)
	}
	if img.Platform == (Platform{}) && ic.OS != "" {
		img.Platform = Platform{OS: ic.OS, Architecture: ic.Architecture, Variant: ic.Variant}
	}
	img.Created = parseCreated(ic.Created)

	img.Layers = make([]Layer, len(m.Layers))
	for i, d := range m.Layers {
		img.Layers[i] = Layer{
			Digest: d.Digest, MediaType: d.MediaType, Size: d.Size,
			Annotations: d.Annotations, URLs: d.URLs,
		}
	}
	if !isImageConfig(m.Config.MediaType) && (ic.RootFS == nil || len(ic.RootFS.DiffIDs) == 0) {
		// An artifact, not an image: its layers are not a filesystem.
		for i := range img.Layers {
			img.Layers[i].ID = img.Layers[i].Digest.Encoded()
		}
		return nil
	}
	var diffIDs []digest.Digest
	if ic.RootFS != nil {
		diffIDs = ic.RootFS.DiffIDs
	}
	if len(diffIDs) != len(m.Layers) {
		return fmt.Errorf("config %s lists %d diff_ids for the manifest's %d layers",
			m.Config.Digest, len(diffIDs), len(m.Layers))
	}
	for _, d := range diffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("config %s: diff_id %q: %w", m.Config.Digest, d, err)
		}
	}
	chain := ChainIDs(diffIDs)
	for i := range img.Layers {
		img.Layers[i].DiffID = diffIDs[i]
		img.Layers[i].ID = chain[i].Encoded()
	}
	jsons, err := legacyLayerJSON(cfg, img.Layers)
	if err != nil {
		return fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	for i := range img.Layers {
		img.Layers[i].JSON = jsons[i]
	}
	return nil
}

func isImageConfig(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == MediaTypeDockerConfig
}

// parseCreated reads an RFC 3339 "created"; zero when absent or odd.
func parseCreated(raw json.RawMessage) time.Time {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil || s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ChainIDs computes the OCI ChainID of each layer from the diff_ids, base
// first: ChainID(0) = DiffID(0), ChainID(n) = sha256(ChainID(n-1) + " " +
// DiffID(n)).
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.Canonical.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// resolveSchema1 fills img from a Docker schema 1 manifest, read for its
// history: layers base first, named by the v1 IDs in v1Compatibility,
// whose JSON they carry.
func resolveSchema1(img *Image) error {
	var m struct {
		Architecture string `json:"architecture"`
		FSLayers     []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
		History []struct {
			V1Compatibility string `json:"v1Compatibility"`
		} `json:"history"`
	}
	if err := json.Unmarshal(img.Manifest, &m); err != nil {
		return fmt.Errorf("decode schema 1 manifest: %w", err)
	}
	if len(m.FSLayers) != len(m.History) || len(m.FSLayers) == 0 {
		return fmt.Errorf("schema 1 manifest: %d fsLayers, %d history entries", len(m.FSLayers), len(m.History))
	}
	n := len(m.FSLayers)
	img.Layers = make([]Layer, n)
	for i := range m.FSLayers {
		var v1 struct {
			ID      string          `json:"id"`
			Created json.RawMessage `json:"created"`
			OS      string          `json:"os"`
		}
		js := []byte(m.History[i].V1Compatibility)
		if err := json.Unmarshal(js, &v1); err != nil {
			return fmt.Errorf("schema 1 manifest: history %d: %w", i, err)
		}
		if !hex64RE.MatchString(v1.ID) {
			return fmt.Errorf("schema 1 manifest: history %d: bad id %q", i, v1.ID)
		}
		// Schema 1 lists the top layer first.
		img.Layers[n-1-i] = Layer{ID: v1.ID, Digest: m.FSLayers[i].BlobSum, Size: -1, JSON: js}
		if i == 0 {
			img.Created = parseCreated(v1.Created)
			if img.Platform == (Platform{}) {
				img.Platform = Platform{OS: v1.OS, Architecture: m.Architecture}
			}
		}
	}
	return nil
}
