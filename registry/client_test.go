package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry/registrytest"
)

// quietLogger drops the client's logs (set REGFS_TEST_LOG=debug to see them).
func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if lvl, err := logrus.ParseLevel(os.Getenv("REGFS_TEST_LOG")); err == nil {
		l.SetOutput(os.Stderr)
		l.SetLevel(lvl)
	}
	return logrus.NewEntry(l)
}

// testOptions are fast-failing options for tests: no credentials from the
// machine's docker config, millisecond back-off, a short stall timeout.
func testOptions() Options {
	return Options{
		Keychain:        authn.NewMultiKeychain(), // anonymous
		RetryBackoffMin: time.Millisecond,
		RetryBackoffMax: 20 * time.Millisecond,
		RequestTimeout:  5 * time.Second,
		Logger:          quietLogger(),
	}
}

func newClient(t testing.TB, host string, opts Options) *v2Client {
	t.Helper()
	c, err := New(context.Background(), host, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", host, err)
	}
	v2, ok := c.(*v2Client)
	if !ok {
		t.Fatalf("New(%s): got %T (API %s), want the v2 client", host, c, c.API())
	}
	return v2
}

func withAuth(o Options, user, pass string) Options {
	o.Authenticator = authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
	return o
}

// smallRegistry is a registry with the fixture set minus the large image.
func smallRegistry(t *testing.T, opts ...registrytest.Option) (*registrytest.Registry, *registrytest.Fixtures) {
	t.Helper()
	reg := registrytest.StartRegistry(t, opts...)
	return reg, registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
}

func TestNewChoosesAPI(t *testing.T) {
	reg := registrytest.StartRegistry(t)
	c, err := New(context.Background(), reg.Host, testOptions())
	if err != nil {
		t.Fatalf("New(v2 registry): %v", err)
	}
	if c.API() != APIV2 || c.Host() != reg.Host {
		t.Errorf("v2 registry: got API %s host %s, want %s %s", c.API(), c.Host(), APIV2, reg.Host)
	}

	v1 := registrytest.StartV1Server(t)
	c, err = New(context.Background(), v1.Host, testOptions())
	if err != nil {
		t.Fatalf("New(v1 server): %v", err)
	}
	if c.API() != APIV1 {
		t.Errorf("v1 server: got API %s, want %s", c.API(), APIV1)
	}

	for _, tt := range []struct {
		host string
		api  string
	}{
		{"http://127.0.0.1:1", APIAuto},
		{"127.0.0.1:1/path", APIAuto},
		{"", APIAuto},
		{reg.Host, "v3"},
	} {
		o := testOptions()
		o.API = tt.api
		if _, err := New(context.Background(), tt.host, o); err == nil {
			t.Errorf("New(%q, API %q): got no error", tt.host, tt.api)
		}
	}

	// Nothing listening: the probe retries, then fails.
	o := testOptions()
	o.MaxRetries = 2
	if _, err := New(context.Background(), "127.0.0.1:1", o); err == nil || !IsTemporary(err) {
		t.Errorf("New(nothing listening): got %v, want a temporary connection error", err)
	}

	// A probe answered 500 every time gives up after 1+MaxRetries attempts.
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	h := proxy.FailStatus(http.StatusInternalServerError, "", 0, nil)
	_, err = New(context.Background(), proxy.Host, o)
	if err == nil || !IsTemporary(err) {
		t.Errorf("New(500 proxy): got %v, want a temporary error", err)
	}
	if h.Hits() != 3 {
		t.Errorf("New(500 proxy): got %d attempts, want 3", h.Hits())
	}
}

func TestPlainHTTPPolicy(t *testing.T) {
	tests := []struct {
		host   string
		plain  bool
		scheme string
	}{
		{"127.0.0.1:5000", false, "http"},
		{"127.8.9.10", false, "http"},
		{"localhost:5000", false, "http"},
		{"[::1]:5000", false, "http"},
		{"10.0.0.1:5000", false, "https"},
		{"192.168.1.1", false, "https"},
		{"registry.example.com", false, "https"},
		{"registry.example.com", true, "http"},
		{"docker.io", false, "https"},
	}
	for _, tt := range tests {
		o := testOptions().withDefaults()
		o.PlainHTTP = tt.plain
		c, err := newV2Client(context.Background(), tt.host, o)
		if err != nil {
			t.Fatalf("newV2Client(%s): %v", tt.host, err)
		}
		if c.scheme != tt.scheme {
			t.Errorf("%s (PlainHTTP %v): got scheme %s, want %s", tt.host, tt.plain, c.scheme, tt.scheme)
		}
	}
	// The guard refuses the other scheme to the registry host, so ggcr's
	// ping cannot fall back to plain HTTP for a private address.
	o := testOptions().withDefaults()
	c, _ := newV2Client(context.Background(), "10.0.0.1:5000", o)
	req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1:5000/v2/", nil)
	if _, err := c.authBase.RoundTrip(req); !errors.As(err, new(*schemeError)) {
		t.Errorf("plain HTTP to a private host: got %v, want a scheme error", err)
	}
	// Docker Hub's API host.
	c, _ = newV2Client(context.Background(), "docker.io", o)
	if got, want := c.url("/v2/"), "https://registry-1.docker.io/v2/"; got != want {
		t.Errorf("docker.io URL: got %s, want %s", got, want)
	}
	if rp, _ := c.repoPath("busybox"); rp != "library/busybox" {
		t.Errorf("docker.io repo: got %s, want library/busybox", rp)
	}
}

func TestCatalogAndTagsPaging(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithCatalogMaxEntries(3))
	ctx := context.Background()

	o := testOptions()
	o.PageSize = 2
	c := newClient(t, reg.Host, o)
	repos, err := c.Catalog(ctx)
	if err != nil {
		t.Fatalf("Catalog: %v", err)
	}
	if want := fx.Repositories(); !slices.Equal(repos, want) {
		t.Errorf("Catalog: got %v, want %v", repos, want)
	}
	catalogGets := reg.CountRequests(func(q registrytest.Request) bool { return q.Path == "/v2/_catalog" })
	if want := (len(fx.Repositories()) + 1) / 2; catalogGets < want {
		t.Errorf("Catalog: got %d page requests, want at least %d", catalogGets, want)
	}
	tags, err := c.Tags(ctx, registrytest.RepoPaging)
	if err != nil {
		t.Fatalf("Tags: %v", err)
	}
	if want := fx.Tags(registrytest.RepoPaging); len(want) != registrytest.PagingTagCount || !slices.Equal(tags, want) {
		t.Errorf("Tags: got %v, want %v", tags, want)
	}
	pages := reg.CountRequests(func(q registrytest.Request) bool { return strings.HasSuffix(q.Path, "/tags/list") })
	if pages < registrytest.PagingTagCount/2 {
		t.Errorf("Tags: got %d page requests, want at least %d", pages, registrytest.PagingTagCount/2)
	}

	// WithListPages: each page's names as it arrives, all of them.
	var got [][]string
	pagesCtx := WithListPages(ctx, func(names []string) { got = append(got, slices.Clone(names)) })
	if tags, err = c.Tags(pagesCtx, registrytest.RepoPaging); err != nil {
		t.Fatalf("Tags with pages: %v", err)
	}
	all := slices.Concat(got...)
	slices.Sort(all)
	if len(got) < registrytest.PagingTagCount/2 || !slices.Equal(all, tags) || slices.ContainsFunc(got, func(p []string) bool { return len(p) > 2 }) {
		t.Errorf("Tags with pages: got pages %v, want pages of at most 2 names making %v", got, tags)
	}

	// A page size over the server's maximum: the server's own size.
	o.PageSize = 1000
	c = newClient(t, reg.Host, o)
	repos, err = c.Catalog(ctx)
	if err != nil {
		t.Fatalf("Catalog with n over the maximum: %v", err)
	}
	if want := fx.Repositories(); !slices.Equal(repos, want) {
		t.Errorf("Catalog with n over the maximum: got %v, want %v", repos, want)
	}

	if _, err := c.Tags(ctx, "no/such/repo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tags(unknown repo): got %v, want ErrNotFound", err)
	}
	if _, err := c.Tags(ctx, "Bad/Name"); err == nil {
		t.Errorf("Tags(bad name): got no error")
	}
}

func TestCatalogRefused(t *testing.T) {
	reg, _ := smallRegistry(t)
	ctx := context.Background()
	for _, status := range []int{http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden} {
		proxy := registrytest.StartFaultProxy(t, reg.URL)
		proxy.FailStatus(status, "", 0, registrytest.PathContains("/_catalog"))
		c := newClient(t, proxy.Host, testOptions())
		repos, err := c.Catalog(ctx)
		if err != nil || repos == nil || len(repos) != 0 {
			t.Errorf("catalog answered %d: got %v, %v; want an empty list and no error", status, repos, err)
		}
	}
	// Any other failure is an error.
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	proxy.FailStatus(http.StatusBadRequest, "", 0, registrytest.PathContains("/_catalog"))
	if _, err := newClient(t, proxy.Host, testOptions()).Catalog(ctx); err == nil {
		t.Errorf("catalog answered 400: got no error")
	}
}

// checkImage compares a resolved image with the fixture pushed.
func checkImage(t *testing.T, got *Image, want *registrytest.Image) {
	t.Helper()
	if string(got.Manifest) != string(want.Manifest) || got.ManifestDigest != want.Digest || got.ManifestMediaType != want.MediaType {
		t.Errorf("manifest: got %s %s (%d bytes), want %s %s (%d bytes)", got.ManifestDigest, got.ManifestMediaType,
			len(got.Manifest), want.Digest, want.MediaType, len(want.Manifest))
	}
	if string(got.Config) != string(want.Config) || got.ConfigDigest != want.ConfigDigest {
		t.Errorf("config: got %s, want %s", got.ConfigDigest, want.ConfigDigest)
	}
	var cfg struct{ Created time.Time }
	if err := json.Unmarshal(want.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(cfg.Created) || got.Created.IsZero() {
		t.Errorf("created: got %v, want %v", got.Created, cfg.Created)
	}
	if len(got.Layers) != len(want.LayerDescriptors) {
		t.Fatalf("layers: got %d, want %d", len(got.Layers), len(want.LayerDescriptors))
	}
	chain := ChainIDs(want.DiffIDs)
	for i, l := range got.Layers {
		d := want.LayerDescriptors[i]
		if l.Digest != d.Digest || l.Size != d.Size || l.MediaType != d.MediaType || l.DiffID != want.DiffIDs[i] {
			t.Errorf("layer %d: got %s %d %s diff %s, want %s %d %s diff %s", i, l.Digest, l.Size, l.MediaType, l.DiffID,
				d.Digest, d.Size, d.MediaType, want.DiffIDs[i])
		}
		if l.ID != chain[i].Encoded() {
			t.Errorf("layer %d: got ID %s, want %s", i, l.ID, chain[i].Encoded())
		}
		var js struct {
			ID, Parent string
			OS         string `json:"os"`
		}
		if err := json.Unmarshal(l.JSON, &js); err != nil {
			t.Errorf("layer %d JSON %s: %v", i, l.JSON, err)
		}
		wantParent := ""
		if i > 0 {
			wantParent = got.Layers[i-1].ID
		}
		if js.ID != l.ID || js.Parent != wantParent || js.OS != want.Platform.OS && want.Platform.OS != "" {
			t.Errorf("layer %d JSON: got id %s parent %s os %s, want %s %s %s", i, js.ID, js.Parent, js.OS, l.ID, wantParent, want.Platform.OS)
		}
	}
	anc := got.Ancestry()
	if len(anc) != len(got.Layers) || anc[0] != got.Layers[len(got.Layers)-1].ID {
		t.Errorf("ancestry: got %v", anc)
	}
}

func TestResolve(t *testing.T) {
	reg, fx := smallRegistry(t)
	c := newClient(t, reg.Host, testOptions())
	ctx := context.Background()
	amd64 := Platform{OS: "linux", Architecture: "amd64"}
	tests := []struct {
		name, repo, ref string
		platform        Platform
		want            *registrytest.Image
	}{
		{"OCI by tag", registrytest.RepoSmall, "latest", amd64, fx.Small},
		{"Docker schema2 by tag", registrytest.RepoSmall, "docker", amd64, fx.SmallDocker},
		{"by digest", registrytest.RepoSmall, fx.Small.Digest.String(), amd64, fx.Small},
		{"deep repository", registrytest.RepoDeep, "v1", amd64, fx.Deep},
		{"zstd layers", registrytest.RepoCompress, "zstd", amd64, fx.Zstd},
		{"default tag", registrytest.RepoSmall, "", amd64, fx.Small},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := c.Resolve(ctx, tt.repo, tt.ref, tt.platform)
			if err != nil {
				t.Fatalf("Resolve(%s, %s): %v", tt.repo, tt.ref, err)
			}
			if img.Index != nil || img.Registry != reg.Host || img.API != APIV2 || img.Repository != tt.repo {
				t.Errorf("got index %d bytes, registry %s, API %s, repo %s", len(img.Index), img.Registry, img.API, img.Repository)
			}
			checkImage(t, img, tt.want)
		})
	}
}

func TestResolveIndex(t *testing.T) {
	reg, fx := smallRegistry(t)
	c := newClient(t, reg.Host, testOptions())
	ctx := context.Background()
	for _, idx := range []struct {
		tag string
		fx  *registrytest.Index
	}{{"latest", fx.Multi}, {"docker", fx.MultiDocker}} {
		for i, p := range registrytest.MultiPlatforms() {
			want := Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
			ask := want
			if ask.Architecture == "arm64" {
				ask.Variant = "" // arm64 ≈ arm64/v8
			}
			img, err := c.Resolve(ctx, registrytest.RepoMulti, idx.tag, ask)
			if err != nil {
				t.Fatalf("Resolve(multi:%s, %s): %v", idx.tag, ask, err)
			}
			if string(img.Index) != string(idx.fx.Manifest) || img.IndexDigest != idx.fx.Digest {
				t.Errorf("multi:%s: index: got %s, want %s", idx.tag, img.IndexDigest, idx.fx.Digest)
			}
			if len(img.Platforms) != len(registrytest.MultiPlatforms()) {
				t.Errorf("multi:%s: got %d platforms, want %d", idx.tag, len(img.Platforms), len(registrytest.MultiPlatforms()))
			}
			if img.Platform != want {
				t.Errorf("multi:%s for %s: got platform %s, want %s", idx.tag, ask, img.Platform, want)
			}
			checkImage(t, img, idx.fx.Images[i])
		}
		img, err := c.Resolve(ctx, registrytest.RepoMulti, idx.tag, Platform{OS: "linux", Architecture: "riscv64"})
		if err != nil {
			t.Fatalf("Resolve(multi:%s, riscv64): %v", idx.tag, err)
		}
		if img.Manifest != nil || img.Index == nil || len(img.Platforms) != 3 || img.Layers != nil {
			t.Errorf("multi:%s for riscv64: got manifest %d bytes, index %d bytes, %d platforms; want only the index",
				idx.tag, len(img.Manifest), len(img.Index), len(img.Platforms))
		}
	}
}

func TestResolveErrors(t *testing.T) {
	reg, fx := smallRegistry(t)
	c := newClient(t, reg.Host, testOptions())
	ctx := context.Background()
	missing := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name, repo, ref string
		notFound        bool
	}{
		{"unknown tag", registrytest.RepoSmall, "nope", true},
		{"unknown repository", "no/such", "latest", true},
		{"unknown digest", registrytest.RepoSmall, missing, true},
		{"bad tag", registrytest.RepoSmall, "-x", false},
		{"bad digest", registrytest.RepoSmall, "sha256:xyz", false},
		{"bad repository", "UPPER", "latest", false},
		{"digest of another repository's manifest", registrytest.RepoDeep, fx.Small.Digest.String(), true},
	}
	for _, tt := range tests {
		_, err := c.Resolve(ctx, tt.repo, tt.ref, Platform{})
		if err == nil {
			t.Errorf("%s: got no error", tt.name)
			continue
		}
		if errors.Is(err, ErrNotFound) != tt.notFound {
			t.Errorf("%s: got %v, want ErrNotFound %v", tt.name, err, tt.notFound)
		}
	}
	// A blob that does not exist.
	if _, err := c.OpenBlob(ctx, registrytest.RepoSmall, Layer{Digest: digest.Digest(missing), Size: -1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob(missing, size unknown): got %v, want ErrNotFound", err)
	}
	// With the size known, OpenBlob does no I/O: the first read tells.
	b, err := c.OpenBlob(ctx, registrytest.RepoSmall, Layer{Digest: digest.Digest(missing), Size: 10})
	if err != nil {
		t.Fatalf("OpenBlob(missing, size known): %v", err)
	}
	if _, err := b.ReadAt(ctx, make([]byte, 5), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadAt(missing blob): got %v, want ErrNotFound", err)
	}
	if _, err := b.Open(ctx, 0, -1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(missing blob): got %v, want ErrNotFound", err)
	}
	if _, err := c.OpenBlob(ctx, registrytest.RepoSmall, Layer{Digest: "sha256:short", Size: 10}); err == nil {
		t.Errorf("OpenBlob(bad digest): got no error")
	}
}

func TestBasicAuth(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithHtpasswd("bob", "hunter2"))
	ctx := context.Background()
	c := newClient(t, reg.Host, withAuth(testOptions(), "bob", "hunter2"))
	img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
	if err != nil {
		t.Fatalf("Resolve with the right password: %v", err)
	}
	checkImage(t, img, fx.Small)
	if repos, err := c.Catalog(ctx); err != nil || len(repos) == 0 {
		t.Errorf("Catalog with the right password: got %v, %v", repos, err)
	}
	for _, o := range []Options{withAuth(testOptions(), "bob", "wrong"), testOptions()} {
		c := newClient(t, reg.Host, o)
		if _, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{}); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Resolve with wrong or no credentials: got %v, want ErrUnauthorized", err)
		}
		if _, err := c.Tags(ctx, registrytest.RepoSmall); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Tags with wrong or no credentials: got %v, want ErrUnauthorized", err)
		}
	}
}

func TestDockerConfigCredentials(t *testing.T) {
	reg, _ := smallRegistry(t, registrytest.WithHtpasswd("carol", "s3cret"))
	dir := t.TempDir()
	cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("carol:s3cret")) + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	o := testOptions()
	o.Keychain = nil // the default: authn.DefaultKeychain
	c := newClient(t, reg.Host, o)
	if _, err := c.Tags(context.Background(), registrytest.RepoSmall); err != nil {
		t.Errorf("Tags with credentials from DOCKER_CONFIG: %v", err)
	}
}

func TestBearerAuth(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithTokenAuth("alice", "secret", registrytest.WithAnonymousPull()))
	ctx := context.Background()

	c := newClient(t, reg.Host, withAuth(testOptions(), "alice", "secret"))
	img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
	if err != nil {
		t.Fatalf("Resolve with a token: %v", err)
	}
	checkImage(t, img, fx.Small)
	repos, err := c.Catalog(ctx)
	if err != nil || !slices.Equal(repos, fx.Repositories()) {
		t.Errorf("Catalog with a token: got %v, %v; want %v", repos, err, fx.Repositories())
	}
	scopes := map[string]bool{}
	for _, r := range reg.Token.Requests() {
		for _, s := range r.Scopes {
			scopes[s] = true
		}
		if r.Account != "alice" {
			t.Errorf("token request %+v: got account %q, want alice", r, r.Account)
		}
	}
	for _, want := range []string{"repository:" + registrytest.RepoSmall + ":pull", "registry:catalog:*"} {
		if !scopes[want] {
			t.Errorf("token scopes %v lack %q", scopes, want)
		}
	}
	// One token per scope, cached: more requests in the same scope fetch
	// none.
	issued := reg.Token.IssuedCount()
	if _, err := c.Tags(ctx, registrytest.RepoSmall); err != nil {
		t.Fatal(err)
	}
	if got := reg.Token.IssuedCount(); got != issued {
		t.Errorf("Tags in a cached scope: got %d new tokens, want 0", got-issued)
	}

	// Wrong password: the token server refuses.
	bad := newClient(t, reg.Host, withAuth(testOptions(), "alice", "wrong"))
	if _, err := bad.Tags(ctx, registrytest.RepoSmall); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Tags with a wrong password: got %v, want ErrUnauthorized", err)
	}

	// Anonymous: pull works, the catalog is refused and lists nothing.
	anon := newClient(t, reg.Host, testOptions())
	if _, err := anon.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{}); err != nil {
		t.Errorf("anonymous Resolve: %v", err)
	}
	if repos, err := anon.Catalog(ctx); err != nil || len(repos) != 0 {
		t.Errorf("anonymous Catalog: got %v, %v; want empty, nil", repos, err)
	}
}

func TestBearerTokenRefresh(t *testing.T) {
	reg, _ := smallRegistry(t, registrytest.WithTokenAuth("alice", "secret", registrytest.WithTokenExpiry(time.Second)))
	ctx := context.Background()
	c := newClient(t, reg.Host, withAuth(testOptions(), "alice", "secret"))
	if _, err := c.Tags(ctx, registrytest.RepoSmall); err != nil {
		t.Fatalf("Tags: %v", err)
	}
	issued := reg.Token.IssuedCount()
	time.Sleep(2100 * time.Millisecond) // the token is refused from 1-2 s on
	if _, err := c.Tags(ctx, registrytest.RepoSmall); err != nil {
		t.Fatalf("Tags after the token expired: %v", err)
	}
	if got := reg.Token.IssuedCount(); got <= issued {
		t.Errorf("after expiry: got %d tokens issued, want more than %d", got, issued)
	}
	refused := reg.CountRequests(func(q registrytest.Request) bool {
		return strings.HasSuffix(q.Path, "/tags/list") && q.Status == http.StatusUnauthorized && q.Authorization == "Bearer"
	})
	if refused == 0 {
		t.Errorf("the registry never refused the expired token: the test did not test a refresh")
	}
}

func TestBearerAnonymousRefused(t *testing.T) {
	reg, _ := smallRegistry(t, registrytest.WithTokenAuth("alice", "secret"))
	ctx := context.Background()
	anon := newClient(t, reg.Host, testOptions())
	if _, err := anon.Tags(ctx, registrytest.RepoSmall); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("anonymous Tags, no anonymous pull: got %v, want ErrUnauthorized", err)
	}
	if repos, err := anon.Catalog(ctx); err != nil || len(repos) != 0 {
		t.Errorf("anonymous Catalog, no anonymous pull: got %v, %v; want empty, nil", repos, err)
	}
}

// TestScopeSetupShared: concurrent first requests in one scope share one
// ping and token exchange.
func TestScopeSetupShared(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithTokenAuth("alice", "secret"))
	ctx := context.Background()
	c := newClient(t, reg.Host, withAuth(testOptions(), "alice", "secret"))
	reg.Token.ResetRequests()
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			_, err := c.Resolve(ctx, registrytest.RepoSmall, fx.Small.Digest.String(), Platform{})
			errs <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := reg.Token.IssuedCount(); n != 1 {
		t.Errorf("8 concurrent first requests in one scope: got %d tokens, want 1", n)
	}
}

func TestStalledHeadersRetried(t *testing.T) {
	reg, fx := smallRegistry(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	o := testOptions()
	o.RequestTimeout = 200 * time.Millisecond
	c := newClient(t, proxy.Host, o)
	h := proxy.StallHeaders(5*time.Second, 2, registrytest.ManifestRequests)
	start := time.Now()
	img, err := c.Resolve(context.Background(), registrytest.RepoSmall, "latest", Platform{})
	if err != nil {
		t.Fatalf("Resolve with stalled answers: %v", err)
	}
	checkImage(t, img, fx.Small)
	// Waiting out even one stall would take its whole 5 s.
	if h.Hits() != 2 || time.Since(start) >= 5*time.Second {
		t.Errorf("got %d stalls in %v, want 2 stalls cut short by the 200ms timeout (not waited out)", h.Hits(), time.Since(start))
	}
}

// signSchema1 makes a signed schema 1 manifest out of payload, as
// docker's libtrust did: the JWS goes before the closing brace, and the
// protected header says how to get the payload back.
func signSchema1(payload string) string {
	cut := strings.LastIndex(payload, "\n}")
	prot, _ := json.Marshal(map[string]any{
		"formatLength": cut,
		"formatTail":   base64.RawURLEncoding.EncodeToString([]byte(payload[cut:])),
		"time":         "2016-01-01T00:00:00Z",
	})
	return payload[:cut] + ",\n   \"signatures\": [{\"header\": {\"alg\": \"ES256\"}, \"signature\": \"c2ln\", \"protected\": \"" +
		base64.RawURLEncoding.EncodeToString(prot) + "\"}]" + payload[cut:]
}

func TestResolveSchema1(t *testing.T) {
	reg, _ := smallRegistry(t)
	base := strings.Repeat("b", 64)
	top := strings.Repeat("c", 64)
	blob1, blob2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	v1top := `{"id":"` + top + `","parent":"` + base + `","created":"2016-02-03T04:05:06Z","os":"linux"}`
	v1base := `{"id":"` + base + `","created":"2016-01-01T00:00:00Z"}`
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	payload := "{\n   \"schemaVersion\": 1,\n   \"name\": \"test/small\",\n   \"tag\": \"old\",\n   \"architecture\": \"amd64\",\n" +
		"   \"fsLayers\": [{\"blobSum\": \"" + blob2 + "\"}, {\"blobSum\": \"" + blob1 + "\"}],\n" +
		"   \"history\": [{\"v1Compatibility\": " + q(v1top) + "}, {\"v1Compatibility\": " + q(v1base) + "}]\n}"
	signed := signSchema1(payload)
	payloadDigest := digest.FromString(payload)
	host := tamperProxy(t, reg.URL, func(r *http.Request, resp *http.Response) error {
		if strings.Contains(r.URL.Path, "/manifests/") {
			resp.Body.Close()
			resp.StatusCode = http.StatusOK
			resp.Body = io.NopCloser(strings.NewReader(signed))
			resp.ContentLength = int64(len(signed))
			resp.Header.Set("Content-Length", strconv.Itoa(len(signed)))
			resp.Header.Set("Content-Type", MediaTypeDockerSchema1JWS)
			resp.Header.Set("Docker-Content-Digest", payloadDigest.String())
		}
		return nil
	})
	c := newClient(t, host, testOptions())
	for _, ref := range []string{"old", payloadDigest.String()} {
		img, err := c.Resolve(context.Background(), registrytest.RepoSmall, ref, Platform{})
		if err != nil {
			t.Fatalf("Resolve(schema 1 %s): %v", ref, err)
		}
		if img.ManifestDigest != payloadDigest || string(img.Manifest) != signed || img.ManifestMediaType != MediaTypeDockerSchema1JWS {
			t.Errorf("schema 1: got digest %s type %s, want %s, the signed bytes", img.ManifestDigest, img.ManifestMediaType, payloadDigest)
		}
		if len(img.Layers) != 2 || img.Layers[0].ID != base || img.Layers[1].ID != top ||
			string(img.Layers[1].JSON) != v1top || img.Layers[0].Digest != digest.Digest(blob1) {
			t.Errorf("schema 1 layers: got %+v", img.Layers)
		}
		if want := time.Date(2016, 2, 3, 4, 5, 6, 0, time.UTC); !img.Created.Equal(want) || img.Platform.Architecture != "amd64" {
			t.Errorf("schema 1: got created %v platform %s, want %v linux/amd64", img.Created, img.Platform, want)
		}
	}
	// The signature is not part of the digest, but the payload is.
	if _, err := c.Resolve(context.Background(), registrytest.RepoSmall, digest.FromString(signed).String(), Platform{}); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("schema 1 asked by the digest of the signed bytes: got %v, want ErrDigestMismatch", err)
	}
}

// TestEndlessListingStops: a registry whose Link headers never end makes
// Catalog and Tags stop at the listing bounds with ErrListTooLong, rather
// than grow until the caller's timeout.
func TestEndlessListingStops(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		perPage   int
		wantPages int
	}{
		{"full pages", 1000, maxListNames/1000 + 1},
		{"empty pages", 0, maxListPages},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := registrytest.StartEndlessLister(t, tc.perPage)
			c := newClient(t, srv.Host, testOptions())
			for what, list := range map[string]func() ([]string, error){
				"catalog": func() ([]string, error) { return c.Catalog(ctx) },
				"tags":    func() ([]string, error) { return c.Tags(ctx, "some/repo") },
			} {
				before := srv.Pages()
				names, err := list()
				if !errors.Is(err, ErrListTooLong) || names != nil {
					t.Errorf("%s: got %d names, %v; want ErrListTooLong", what, len(names), err)
				}
				if got := srv.Pages() - before; got != tc.wantPages {
					t.Errorf("%s: got %d pages asked for, want %d", what, got, tc.wantPages)
				}
			}
		})
	}
}
