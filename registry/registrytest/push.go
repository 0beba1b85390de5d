package registrytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// Pusher pushes blobs and manifests to a registry over the real v2 API:
// HEAD to skip blobs already there, POST to start an upload, one PUT
// ?digest= with the whole blob, PUT of manifests by tag or digest. Auth
// (Basic or Bearer, from the registry's challenge) is go-containerregistry's
// transport. Safe for concurrent use.
type Pusher struct {
	host  string
	auth  authn.Authenticator
	inner http.RoundTripper

	mu         sync.Mutex
	transports map[string]http.RoundTripper // by repository
}

// NewPusher returns a Pusher for reg, with its credentials when it has auth.
func NewPusher(reg *Registry) *Pusher {
	return NewPusherFor(reg.Host, reg.Credentials)
}

// NewPusherFor returns a Pusher for the registry at host ("127.0.0.1:port",
// plain HTTP), with creds (nil: anonymous).
func NewPusherFor(host string, creds *Credentials) *Pusher {
	p := &Pusher{host: host, auth: authn.Anonymous, inner: http.DefaultTransport, transports: map[string]http.RoundTripper{}}
	if creds != nil {
		p.auth = authn.FromConfig(authn.AuthConfig{Username: creds.User, Password: creds.Password})
	}
	return p
}

// client returns an authenticated client scoped to push/pull repo.
func (p *Pusher) client(ctx context.Context, repo string) (*http.Client, error) {
	p.mu.Lock()
	t, ok := p.transports[repo]
	p.mu.Unlock()
	if !ok {
		reg, err := name.NewRegistry(p.host, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", p.host, err)
		}
		scope := reg.Repo(repo).Scope(transport.PushScope)
		t, err = transport.NewWithContext(ctx, reg, p.auth, &rewindBody{next: p.inner}, []string{scope})
		if err != nil {
			return nil, fmt.Errorf("auth for %s/%s: %w", p.host, repo, err)
		}
		p.mu.Lock()
		p.transports[repo] = t
		p.mu.Unlock()
	}
	return &http.Client{Transport: t}, nil
}

func (p *Pusher) url(repo, rest string) string {
	return "http://" + p.host + "/v2/" + repo + "/" + rest
}

// do sends req and checks the status; the body of a failure goes in the
// error.
func do(c *http.Client, req *http.Request, want ...int) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return nil, fmt.Errorf("%s %s: status %d: %s", req.Method, req.URL.Redacted(), resp.StatusCode, strings.TrimSpace(string(body)))
}

// BlobExists reports whether repo has blob d (HEAD).
func (p *Pusher) BlobExists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	c, err := p.client(ctx, repo)
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, p.url(repo, "blobs/"+d.String()), nil)
	if err != nil {
		return false, err
	}
	resp, err := do(c, req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// PushBlob uploads blob d (size bytes, read from what open returns) to repo
// in one PUT, unless repo already has it; open is called only when an
// upload is needed.
func (p *Pusher) PushBlob(ctx context.Context, repo string, d digest.Digest, size int64, open func() (io.ReadCloser, error)) error {
	exists, err := p.BlobExists(ctx, repo, d)
	if err != nil {
		return fmt.Errorf("push blob %s to %s: %w", d, repo, err)
	}
	if exists {
		return nil
	}
	c, err := p.client(ctx, repo)
	if err != nil {
		return fmt.Errorf("push blob %s to %s: %w", d, repo, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url(repo, "blobs/uploads/"), nil)
	if err != nil {
		return err
	}
	resp, err := do(c, req, http.StatusAccepted)
	if err != nil {
		return fmt.Errorf("push blob %s to %s: start upload: %w", d, repo, err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("push blob %s to %s: upload location: %w", d, repo, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()

	body, err := open()
	if err != nil {
		return fmt.Errorf("push blob %s to %s: %w", d, repo, err)
	}
	defer body.Close()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.GetBody = open
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = do(c, req, http.StatusCreated)
	if err != nil {
		return fmt.Errorf("push blob %s to %s: %w", d, repo, err)
	}
	resp.Body.Close()
	return nil
}

// PushBytes uploads blob b to repo.
func (p *Pusher) PushBytes(ctx context.Context, repo string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	return d, p.PushBlob(ctx, repo, d, int64(len(b)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// PushManifest PUTs raw as the manifest ref (a tag or digest) of repo with
// mediaType, and checks the digest the registry reports.
func (p *Pusher) PushManifest(ctx context.Context, repo, ref, mediaType string, raw []byte) error {
	c, err := p.client(ctx, repo)
	if err != nil {
		return fmt.Errorf("push manifest %s:%s: %w", repo, ref, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.url(repo, "manifests/"+url.PathEscape(ref)), bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := do(c, req, http.StatusCreated)
	if err != nil {
		return fmt.Errorf("push manifest %s:%s: %w", repo, ref, err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("Docker-Content-Digest"), digest.FromBytes(raw).String(); got != "" && got != want {
		return fmt.Errorf("push manifest %s:%s: registry reports digest %s, want %s", repo, ref, got, want)
	}
	return nil
}

// PushLayer uploads a built layer's blob to repo.
func (p *Pusher) PushLayer(ctx context.Context, repo string, l *Layer) error {
	return p.PushBlob(ctx, repo, l.Digest, l.Size, l.OpenBlob)
}

// PushImage uploads img's layers and config to repo and puts its manifest
// under each tag (by digest only when no tag is given).
func (p *Pusher) PushImage(ctx context.Context, repo string, img *Image, tags ...string) error {
	for _, l := range img.Layers {
		if err := p.PushLayer(ctx, repo, l); err != nil {
			return err
		}
	}
	if _, err := p.PushBytes(ctx, repo, img.Config); err != nil {
		return fmt.Errorf("push config: %w", err)
	}
	if len(tags) == 0 {
		tags = []string{img.Digest.String()}
	}
	for _, tag := range tags {
		if err := p.PushManifest(ctx, repo, tag, img.MediaType, img.Manifest); err != nil {
			return err
		}
	}
	return nil
}

// PushIndex pushes each image of idx by digest, then the index under each
// tag (by digest only when no tag is given).
func (p *Pusher) PushIndex(ctx context.Context, repo string, idx *Index, tags ...string) error {
	for _, img := range idx.Images {
		if err := p.PushImage(ctx, repo, img); err != nil {
			return err
		}
	}
	if len(tags) == 0 {
		tags = []string{idx.Digest.String()}
	}
	for _, tag := range tags {
		if err := p.PushManifest(ctx, repo, tag, idx.MediaType, idx.Manifest); err != nil {
			return err
		}
	}
	return nil
}

// rewindBody sends every attempt of a request with a fresh body from
// GetBody: go-containerregistry's bearer transport sends the same request
// again after refreshing an expired token, and the first attempt consumed
// the body.
type rewindBody struct{ next http.RoundTripper }

func (t *rewindBody) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.GetBody == nil || req.Body == nil || req.Body == http.NoBody {
		return t.next.RoundTrip(req)
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("rewind request body: %w", err)
	}
	r := req.Clone(req.Context())
	r.Body = body
	return t.next.RoundTrip(r)
}
