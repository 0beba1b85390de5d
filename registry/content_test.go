package registry

import (
	"context"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// mapContent is a ContentStore in a map.
type mapContent struct {
	mu sync.Mutex
	m  map[digest.Digest][]byte
}

func (s *mapContent) Content(d digest.Digest) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[d]
	return b, ok
}

func (s *mapContent) PutContent(d digest.Digest, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[d] = b
}

// What one Resolve fetched (manifests, index, config) resolves again by
// digest from Options.Content alone: the registry is gone by then.
func TestResolveFromContentStore(t *testing.T) {
	reg, fx := smallRegistry(t)
	store := &mapContent{m: map[digest.Digest][]byte{}}
	opts := testOptions()
	opts.Content = store
	c := newClient(t, reg.Host, opts)
	ctx := context.Background()
	amd64 := Platform{OS: "linux", Architecture: "amd64"}
	arm64 := Platform{OS: "linux", Architecture: "arm64"}
	for _, r := range []struct {
		repo, tag string
		p         Platform
	}{
		{registrytest.RepoSmall, "latest", amd64},
		{registrytest.RepoSmall, "docker", amd64},
		{registrytest.RepoMulti, "latest", amd64},
		{registrytest.RepoMulti, "latest", arm64},
	} {
		if _, err := c.Resolve(ctx, r.repo, r.tag, r.p); err != nil {
			t.Fatalf("Resolve(%s:%s): %v", r.repo, r.tag, err)
		}
	}
	for _, d := range []digest.Digest{fx.Small.Digest, fx.Small.ConfigDigest, fx.SmallDocker.Digest, fx.Multi.Digest} {
		if _, ok := store.Content(d); !ok {
			t.Errorf("after Resolve: %s not in the content store", d)
		}
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, repo string
		d          digest.Digest
		p          Platform
		want       *registrytest.Image
	}{
		{"OCI manifest", registrytest.RepoSmall, fx.Small.Digest, amd64, fx.Small},
		{"Docker manifest", registrytest.RepoSmall, fx.SmallDocker.Digest, amd64, fx.SmallDocker},
		{"index, amd64", registrytest.RepoMulti, fx.Multi.Digest, amd64, fx.Multi.Images[0]},
		{"index, arm64", registrytest.RepoMulti, fx.Multi.Digest, arm64, fx.Multi.Images[1]},
	} {
		img, err := c.Resolve(ctx, tc.repo, tc.d.String(), tc.p)
		if err != nil {
			t.Errorf("%s: Resolve by digest with the registry gone: %v", tc.name, err)
			continue
		}
		checkImage(t, img, tc.want)
	}
	_, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", amd64)
	if err == nil || !IsUnreachable(err) {
		t.Errorf("Resolve by tag with the registry gone: got %v, want an error IsUnreachable knows", err)
	}
}
