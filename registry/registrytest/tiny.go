package registrytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// MountBlob makes blob d of repository from a blob of repo too, with one
// cross-repository mount request (no bytes sent).
func (p *Pusher) MountBlob(ctx context.Context, repo, from string, d digest.Digest) error {
	c, err := p.client(ctx, repo)
	if err != nil {
		return fmt.Errorf("mount blob %s from %s to %s: %w", d, from, repo, err)
	}
	q := url.Values{"mount": {d.String()}, "from": {from}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url(repo, "blobs/uploads/?"+q.Encode()), nil)
	if err != nil {
		return err
	}
	resp, err := do(c, req, http.StatusCreated)
	if err != nil {
		return fmt.Errorf("mount blob %s from %s to %s: %w", d, from, repo, err)
	}
	resp.Body.Close()
	return nil
}

// TinyManifest is an OCI manifest of config and no layers, and its config.
func TinyManifest() (manifest, config []byte) {
	config = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	manifest, _ = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		Layers:    []ocispec.Descriptor{},
	})
	return manifest, config
}

// PushTinyRepos pushes the TinyManifest image to every repository of repos
// under every tag of tags, parallel requests at a time. The config is
// uploaded once and mounted into the other repositories, so a repository
// costs two requests (its first auth ping, the mount) and one per tag: a
// catalog of thousands is cheap to build.
func PushTinyRepos(ctx context.Context, p *Pusher, repos, tags []string, parallel int) error {
	if len(repos) == 0 {
		return nil
	}
	manifest, config := TinyManifest()
	if _, err := p.PushBytes(ctx, repos[0], config); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(parallel, 1))
	for i, repo := range repos {
		g.Go(func() error {
			if i > 0 {
				if err := p.MountBlob(gctx, repo, repos[0], digest.FromBytes(config)); err != nil {
					return err
				}
			}
			for _, tag := range tags {
				if err := p.PushManifest(gctx, repo, tag, ocispec.MediaTypeImageManifest, manifest); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
