package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Artifacts reads and writes OCI artifacts that refer to an image (OCI
// Distribution 1.1 referrers), beside Client: only the v2 client has it
// (AsArtifacts). Every method reads or writes repo alone.
type Artifacts interface {
	// Referrers lists the manifests of repo whose subject is subject and
	// whose artifactType is artifactType ("": any). It asks the referrers
	// API, and where the registry has none (it answers 404; remembered
	// for the client's life) reads the referrers tag schema's index, tag
	// ReferrersTag(subject). No referrers is an empty list, no error.
	Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error)
	// Manifest fetches manifest d of repo, checked against d.
	Manifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error)
	// Blob fetches blob d of repo whole, checked against d and size (when
	// size >= 0); more than limit bytes is an error.
	Blob(ctx context.Context, repo string, d digest.Digest, size, limit int64) ([]byte, error)
	// PushBlob uploads data as blob d of repo (monolithic: POST, then one
	// PUT), unless repo has it already.
	PushBlob(ctx context.Context, repo string, d digest.Digest, data []byte) error
	// PushReferrer pushes raw, a manifest of mediaType whose subject is
	// subject, by digest; where the registry does not take the subject
	// itself (no OCI-Subject in its answer) it adds the manifest to the
	// referrers tag schema's index of subject. It returns whether the
	// referrers API took it.
	PushReferrer(ctx context.Context, repo string, subject digest.Digest, mediaType, artifactType string, raw []byte) (api bool, err error)
}

// AsArtifacts returns c's Artifacts, false when c has none (a v1 registry).
func AsArtifacts(c Client) (Artifacts, bool) {
	a, ok := c.(Artifacts)
	return a, ok
}

var _ Artifacts = (*v2Client)(nil)

// ReferrersTag is the referrers tag schema's tag for subject: its
// algorithm, "-", its hex (at most 128 characters, the tag limit).
func ReferrersTag(subject digest.Digest) string {
	t := subject.Algorithm().String() + "-" + subject.Encoded()
	return t[:min(len(t), 128)]
}

// maxReferrersPages bounds the Link pages of one referrers answer.
const maxReferrersPages = 100

// referrersAPI remembers that the registry answered 404 to the referrers API.
type referrersAPI struct{ absent atomic.Bool }

func (c *v2Client) Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	if err := subject.Validate(); err != nil {
		return nil, fmt.Errorf("referrers in %s/%s: %w", c.host, rp, err)
	}
	if !c.referrers.absent.Load() {
		descs, found, err := c.referrersAPI(ctx, rp, subject, artifactType)
		if err != nil || found {
			return descs, err
		}
		c.referrers.absent.Store(true)
		c.log.Debugf("no referrers API (404): reading referrers tags")
	}
	return c.referrersTag(ctx, rp, subject, artifactType)
}

// referrersAPI asks GET /v2/<repo>/referrers/<digest>; found is false when
// the registry answers 404, which a registry with the API never does.
func (c *v2Client) referrersAPI(ctx context.Context, rp string, subject digest.Digest, artifactType string) (_ []ocispec.Descriptor, found bool, _ error) {
	what := fmt.Sprintf("referrers of %s/%s@%s", c.host, rp, subject)
	next := c.url("/v2/" + rp + "/referrers/" + subject.String())
	if artifactType != "" {
		next += "?artifactType=" + url.QueryEscape(artifactType)
	}
	var out []ocispec.Descriptor
	seen := map[string]bool{}
	for page := 0; next != ""; page++ {
		if seen[next] || page >= maxReferrersPages {
			return nil, false, fmt.Errorf("%s: Link headers do not end (page %d)", what, page)
		}
		seen[next] = true
		resp, err := c.do(ctx, what, repoScope(rp), http.MethodGet, next, http.Header{"Accept": {MediaTypeOCIIndex}})
		if err != nil {
			return nil, false, err
		}
		if resp.StatusCode == http.StatusNotFound && page == 0 {
			drain(resp)
			return nil, false, nil
		}
		if resp.StatusCode != http.StatusOK {
			return nil, false, fmt.Errorf("%s: %w", what, newHTTPError(resp))
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
		resp.Body.Close()
		if err != nil {
			return nil, false, fmt.Errorf("%s: read: %w", what, err)
		}
		descs, err := parseReferrers(raw, artifactType)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, descs...)
		base, _ := url.Parse(next)
		if next, err = nextLink(base, resp.Header.Get("Link"), c.api); err != nil {
			return nil, false, fmt.Errorf("%s: %w", what, err)
		}
	}
	return out, true, nil
}

// referrersTag reads the referrers tag schema's index of subject.
func (c *v2Client) referrersTag(ctx context.Context, rp string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	m, err := c.fetchManifest(ctx, rp, ReferrersTag(subject))
	if errors.Is(err, ErrNotFound) {
		return []ocispec.Descriptor{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("referrers tag of %s: %w", subject, err)
	}
	descs, err := parseReferrers(m.raw, artifactType)
	if err != nil {
		return nil, fmt.Errorf("referrers tag %s/%s:%s: %w", c.host, rp, ReferrersTag(subject), err)
	}
	return descs, nil
}

// parseReferrers reads an OCI index of referrers and keeps the manifests
// of artifactType ("": all) with a valid digest.
func parseReferrers(raw []byte, artifactType string) ([]ocispec.Descriptor, error) {
	if len(raw) > maxManifestSize {
		return nil, fmt.Errorf("index larger than %d bytes", maxManifestSize)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("referrers index: %w", err)
	}
	if idx.MediaType != "" && idx.MediaType != MediaTypeOCIIndex {
		return nil, fmt.Errorf("referrers index of media type %q", idx.MediaType)
	}
	out := []ocispec.Descriptor{}
	for _, d := range idx.Manifests {
		if d.Digest.Validate() != nil || artifactType != "" && d.ArtifactType != artifactType {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

func (c *v2Client) Manifest(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	m, err := c.fetchManifest(ctx, rp, d.String())
	if err != nil {
		return nil, err
	}
	return m.raw, nil
}

func (c *v2Client) Blob(ctx context.Context, repo string, d digest.Digest, size, limit int64) ([]byte, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	return c.fetchBlobBytes(ctx, rp, d, size, limit, fmt.Sprintf("blob %s/%s@%s", c.host, rp, d))
}

// pushScope is the auth scope that lets a client write repo.
func pushScope(repo string) string { return "repository:" + repo + ":pull,push" }

// sendBody sends method url with body in repo's push scope; a body is sent
// once (no retry round), but auth may send it again (rewindBody).
func (c *v2Client) sendBody(ctx context.Context, what, rp, method, u, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.scoped(pushScope(rp)).RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return resp, nil
}

func (c *v2Client) PushBlob(ctx context.Context, repo string, d digest.Digest, data []byte) error {
	rp, err := c.repoPath(repo)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d, err)
	}
	what := fmt.Sprintf("push blob %s/%s@%s", c.host, rp, d)
	if got := digest.Canonical.FromBytes(data); got != d {
		return fmt.Errorf("%s: the bytes hash to %s", what, got)
	}
	blobURL := c.url("/v2/" + rp + "/blobs/" + d.String())
	resp, err := c.do(ctx, what, pushScope(rp), http.MethodHead, blobURL, nil)
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	resp, err = c.sendBody(ctx, what, rp, http.MethodPost, c.url("/v2/"+rp+"/blobs/uploads/"), "application/octet-stream", nil)
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("%s: start upload: %w", what, newHTTPError(resp))
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("%s: upload location %q: %v", what, resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, err = c.sendBody(ctx, what, rp, http.MethodPut, loc.String(), "application/octet-stream", data)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%s: %w", what, newHTTPError(resp))
	}
	return nil
}

// pushManifest PUTs raw as manifest ref (tag or digest) of rp and returns
// the registry's OCI-Subject answer ("" when it sent none).
func (c *v2Client) pushManifest(ctx context.Context, rp, ref, mediaType string, raw []byte) (string, error) {
	what := fmt.Sprintf("push manifest %s/%s%s", c.host, rp, refSep(ref))
	if len(raw) > maxManifestSize {
		return "", fmt.Errorf("%s: larger than %d bytes", what, maxManifestSize)
	}
	resp, err := c.sendBody(ctx, what, rp, http.MethodPut, c.url("/v2/"+rp+"/manifests/"+ref), mediaType, raw)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%s: %w", what, newHTTPError(resp))
	}
	return resp.Header.Get("OCI-Subject"), nil
}

func (c *v2Client) PushReferrer(ctx context.Context, repo string, subject digest.Digest, mediaType, artifactType string, raw []byte) (bool, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return false, fmt.Errorf("push referrer of %s: %w", subject, err)
	}
	d := digest.Canonical.FromBytes(raw)
	ociSubject, err := c.pushManifest(ctx, rp, d.String(), mediaType, raw)
	if err != nil {
		return false, err
	}
	if ociSubject != "" {
		return true, nil
	}
	// The referrers tag schema: read the index, add ours, write it back.
	// Two pushers at once may lose one's entry (the schema has no lock).
	desc := ocispec.Descriptor{MediaType: mediaType, ArtifactType: artifactType, Digest: d, Size: int64(len(raw))}
	idx := ocispec.Index{MediaType: MediaTypeOCIIndex}
	idx.SchemaVersion = 2
	tag := ReferrersTag(subject)
	m, err := c.fetchManifest(ctx, rp, tag)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("referrers tag of %s: %w", subject, err)
	default:
		if err := json.Unmarshal(m.raw, &idx); err != nil {
			return false, fmt.Errorf("referrers tag %s/%s:%s: %w", c.host, rp, tag, err)
		}
		for _, have := range idx.Manifests {
			if have.Digest == d {
				return false, nil
			}
		}
	}
	idx.Manifests = append(idx.Manifests, desc)
	out, err := json.Marshal(idx)
	if err != nil {
		return false, fmt.Errorf("referrers tag of %s: %w", subject, err)
	}
	if _, err := c.pushManifest(ctx, rp, tag, MediaTypeOCIIndex, out); err != nil {
		return false, err
	}
	return false, nil
}
