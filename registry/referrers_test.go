package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/registry/registrytest"
)

// pushTestReferrer pushes an artifact of artifactType with one blob whose
// subject is subject, and returns its manifest digest.
func pushTestReferrer(t *testing.T, a Artifacts, repo string, subject ocispec.Descriptor, artifactType string, payload []byte) (digest.Digest, bool) {
	t.Helper()
	ctx := context.Background()
	empty := []byte("{}")
	for _, b := range [][]byte{empty, payload} {
		if err := a.PushBlob(ctx, repo, digest.FromBytes(b), b); err != nil {
			t.Fatalf("PushBlob: %v", err)
		}
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digest.FromBytes(empty), Size: 2},
		Layers:       []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: digest.FromBytes(payload), Size: int64(len(payload))}},
		Subject:      &subject,
	}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	api, err := a.PushReferrer(ctx, repo, subject.Digest, ocispec.MediaTypeImageManifest, artifactType, raw)
	if err != nil {
		t.Fatalf("PushReferrer: %v", err)
	}
	return digest.FromBytes(raw), api
}

// Referrers pushed and listed both ways: through the referrers tag schema
// on the reference registry (it has no referrers API), and through the
// API of a front that has one. Each list holds what was pushed for that
// artifact type, nothing else; a second push of the same manifest adds no
// second entry.
func TestReferrersPushAndList(t *testing.T) {
	reg, fx := smallRegistry(t)
	front := registrytest.StartReferrersFront(t, reg)
	subject := ocispec.Descriptor{MediaType: fx.Small.MediaType, Digest: fx.Small.Digest, Size: int64(len(fx.Small.Manifest))}
	const ours, theirs = "application/vnd.example.ours", "application/vnd.example.theirs"
	for _, tc := range []struct {
		name, host string
		wantAPI    bool
	}{
		{"tag schema", reg.Host, false},
		{"referrers API", front.Host, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := newClient(t, tc.host, testOptions())
			if got, err := c.Referrers(ctx, registrytest.RepoSmall, subject.Digest, ours); err != nil || len(got) != 0 {
				t.Fatalf("Referrers before any push: %v, %v; want none", got, err)
			}
			d1, api := pushTestReferrer(t, c, registrytest.RepoSmall, subject, ours, []byte("one "+tc.name))
			if api != tc.wantAPI {
				t.Errorf("PushReferrer through the API: got %v, want %v", api, tc.wantAPI)
			}
			pushTestReferrer(t, c, registrytest.RepoSmall, subject, theirs, []byte("two "+tc.name))
			pushTestReferrer(t, c, registrytest.RepoSmall, subject, ours, []byte("one "+tc.name))
			got, err := c.Referrers(ctx, registrytest.RepoSmall, subject.Digest, ours)
			if err != nil {
				t.Fatalf("Referrers: %v", err)
			}
			if len(got) != 1 || got[0].Digest != d1 || got[0].ArtifactType != ours {
				t.Fatalf("Referrers(%s): got %+v, want the one manifest %s", ours, got, d1)
			}
			raw, err := c.Manifest(ctx, registrytest.RepoSmall, d1)
			if err != nil || digest.FromBytes(raw) != d1 {
				t.Fatalf("Manifest(%s): %v", d1, err)
			}
			all, err := c.Referrers(ctx, registrytest.RepoSmall, subject.Digest, "")
			if err != nil || len(all) != 2 {
				t.Fatalf("Referrers(any type): got %d, %v; want 2", len(all), err)
			}
		})
	}
	// The reference registry keeps the tag schema's index as a tag.
	tagged := reg.CountRequests(func(r registrytest.Request) bool {
		return r.Method == http.MethodPut && r.Path == "/v2/"+registrytest.RepoSmall+"/manifests/"+ReferrersTag(subject.Digest)
	})
	if tagged == 0 {
		t.Errorf("no PUT of the referrers tag %s", ReferrersTag(subject.Digest))
	}
	if front.Lookups.Load() == 0 {
		t.Errorf("the front's referrers API was never asked")
	}
}

// Pushing through token auth: the push scope's token is asked for, and
// the bodies reach the registry (the auth transport may send one twice).
func TestReferrersPushWithTokenAuth(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithTokenAuth("bob", "pw"))
	c := newClient(t, reg.Host, withAuth(testOptions(), "bob", "pw"))
	subject := ocispec.Descriptor{MediaType: fx.Small.MediaType, Digest: fx.Small.Digest, Size: int64(len(fx.Small.Manifest))}
	d, _ := pushTestReferrer(t, c, registrytest.RepoSmall, subject, "application/vnd.example.ours", []byte("payload"))
	got, err := c.Referrers(context.Background(), registrytest.RepoSmall, subject.Digest, "application/vnd.example.ours")
	if err != nil || len(got) != 1 || got[0].Digest != d {
		t.Fatalf("Referrers after a push with token auth: got %+v, %v; want %s", got, err, d)
	}
}
