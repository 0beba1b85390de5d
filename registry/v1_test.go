package registry_test

import (
	"github.com/regfs/regfs/blobio"

	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
	"github.com/regfs/regfs/tarsum"
)

// v1Tar is a layer tar with one file; gzip-compressed when zip is set.
func v1Tar(t testing.TB, name string, content []byte, zip bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if zip {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// v1Random is n bytes from a fixed seed.
func v1Random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

var (
	v1BigOnce sync.Once
	v1BigData []byte
)

// v1BigTar is an uncompressed tar of one 1 MiB random file, made once.
func v1BigTar(t testing.TB) []byte {
	v1BigOnce.Do(func() { v1BigData = v1Tar(t, "big.bin", v1Random(1<<20, 2), false) })
	return v1BigData
}

type v1Fix struct {
	s        *registrytest.V1Server
	busybox  []*registrytest.V1Image // library/busybox:latest, base first
	app      []*registrytest.V1Image // team/app:1.0, base first, shares busybox's base
	big      *registrytest.V1Image   // team/big:latest, one uncompressed ~1 MiB layer
	bigBytes []byte
}

func newV1Fix(t *testing.T, opts ...registrytest.V1Option) *v1Fix {
	t.Helper()
	s := registrytest.StartV1Server(t, opts...)
	base := registrytest.V1LayerSpec{Tar: v1Tar(t, "bin/sh", []byte("shell"), true)}
	bb, err := s.AddImage("busybox", "latest", base,
		registrytest.V1LayerSpec{Tar: v1Tar(t, "etc/motd", []byte("hello"), true), Created: time.Date(2015, 3, 4, 5, 6, 7, 8, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	app, err := s.AddImage("team/app", "1.0", base,
		registrytest.V1LayerSpec{Tar: v1Tar(t, "app/a", []byte("a"), true)},
		registrytest.V1LayerSpec{Tar: v1Tar(t, "app/b", v1Random(20000, 1), true)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("team/app", "latest", app[2].ID); err != nil {
		t.Fatal(err)
	}
	s.SetDescription("team/app", "The App")
	bigTar := v1BigTar(t)
	big, err := s.AddImage("team/big", "latest", registrytest.V1LayerSpec{Tar: bigTar})
	if err != nil {
		t.Fatal(err)
	}
	return &v1Fix{s: s, busybox: bb, app: app, big: big[0], bigBytes: bigTar}
}

type v1TestClient interface {
	registry.Client
	Ping(ctx context.Context) (registry.V1Ping, error)
	Search(ctx context.Context, q string) ([]registry.V1SearchResult, error)
	VerifyLayer(ctx context.Context, repo string, l registry.Layer) error
}

func newV1TestClient(t *testing.T, host string, opts registry.V1TestOptions) v1TestClient {
	t.Helper()
	if opts.RetryBase == 0 {
		opts.RetryBase = time.Millisecond
		opts.RetryMax = 10 * time.Millisecond
	}
	c, err := registry.NewV1TestClient(host, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestV1NewClientBadHost(t *testing.T) {
	for _, h := range []string{"", "http://x", "x/y", "a b"} {
		if _, err := registry.NewV1TestClient(h, registry.V1TestOptions{}); err == nil {
			t.Errorf("host %q: got nil error, want one", h)
		}
	}
}

func TestV1PingTagsCatalog(t *testing.T) {
	f := newV1Fix(t)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	if c.Host() != f.s.Host || c.API() != registry.APIV1 {
		t.Errorf("Host/API: got %q %q", c.Host(), c.API())
	}
	p, err := c.Ping(ctx)
	if err != nil || p.Version != registrytest.V1RegistryVersion || !p.Standalone {
		t.Errorf("Ping: got %+v, %v; want version %s standalone", p, err, registrytest.V1RegistryVersion)
	}
	for _, tt := range []struct {
		repo string
		want string
	}{
		{"busybox", "[latest]"},
		{"library/busybox", "[latest]"},
		{"team/app", "[1.0 latest]"},
	} {
		got, err := c.Tags(ctx, tt.repo)
		if err != nil || fmt.Sprint(got) != tt.want {
			t.Errorf("Tags(%s): got %v, %v; want %s", tt.repo, got, err, tt.want)
		}
	}
	cat, err := c.Catalog(ctx)
	if want := "[library/busybox team/app team/big]"; err != nil || fmt.Sprint(cat) != want {
		t.Errorf("Catalog: got %v, %v; want %s", cat, err, want)
	}
	res, err := c.Search(ctx, "the app")
	if err != nil || len(res) != 1 || res[0].Name != "team/app" || res[0].Description != "The App" {
		t.Errorf("Search: got %+v, %v; want team/app \"The App\"", res, err)
	}
}

func TestV1CatalogPagingAndUnsupported(t *testing.T) {
	f := newV1Fix(t)
	for i := 0; i < 150; i++ {
		f.s.SetDescription(fmt.Sprintf("many/r%03d", i), "")
	}
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	cat, err := c.Catalog(context.Background())
	if err != nil || len(cat) != 153 || cat[0] != "library/busybox" || cat[152] != "team/big" {
		t.Errorf("Catalog: got %d names, %v; want 153", len(cat), err)
	}
	if got := f.s.Count("search"); got != 2 {
		t.Errorf("search requests: got %d, want 2 pages", got)
	}

	s2 := registrytest.StartV1Server(t, registrytest.V1WithoutSearch())
	c2 := newV1TestClient(t, s2.Host, registry.V1TestOptions{})
	cat, err = c2.Catalog(context.Background())
	if err != nil || cat == nil || len(cat) != 0 {
		t.Errorf("Catalog without search: got %v, %v; want empty and nil", cat, err)
	}
	if _, err := c2.Search(context.Background(), "x"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Search without search: got %v, want not found", err)
	}
}

func TestV1Resolve(t *testing.T) {
	f := newV1Fix(t)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	for _, tt := range []struct {
		repo, ref string
		want      []*registrytest.V1Image
	}{
		{"busybox", "latest", f.busybox},
		{"library/busybox", "latest", f.busybox},
		{"team/app", "1.0", f.app},
		{"team/app", f.app[2].ID, f.app},
		{"team/app", f.app[1].ID, f.app[:2]},
		{"team/big", "latest", []*registrytest.V1Image{f.big}},
	} {
		t.Run(tt.repo+":"+tt.ref, func(t *testing.T) {
			img, err := c.Resolve(context.Background(), tt.repo, tt.ref, registry.HostPlatform())
			if err != nil {
				t.Fatal(err)
			}
			if img.API != registry.APIV1 || img.Registry != f.s.Host || img.Repository != tt.repo || img.Reference != tt.ref {
				t.Errorf("got API %q registry %q repo %q ref %q", img.API, img.Registry, img.Repository, img.Reference)
			}
			if img.Manifest != nil || img.Config != nil {
				t.Errorf("v1 image with a manifest or config")
			}
			if len(img.Layers) != len(tt.want) {
				t.Fatalf("got %d layers, want %d", len(img.Layers), len(tt.want))
			}
			for i, l := range img.Layers {
				w := tt.want[i]
				if l.ID != w.ID || !bytes.Equal(l.JSON, w.JSON) || l.Size != int64(len(w.Layer)) || l.Checksum != w.Checksum || l.Digest != "" {
					t.Errorf("layer %d: got id %s size %d checksum %q, want id %s size %d checksum %q (JSON equal %v)",
						i, l.ID, l.Size, l.Checksum, w.ID, len(w.Layer), w.Checksum, bytes.Equal(l.JSON, w.JSON))
				}
			}
			top := tt.want[len(tt.want)-1]
			if !img.Created.Equal(top.Created) {
				t.Errorf("Created: got %v, want %v", img.Created, top.Created)
			}
			if img.Ancestry()[0] != top.ID {
				t.Errorf("Ancestry()[0]: got %s, want %s", img.Ancestry()[0], top.ID)
			}
			if img.Platform.OS != "linux" || img.Platform.Architecture != "amd64" {
				t.Errorf("Platform: got %v", img.Platform)
			}
		})
	}
}

func TestV1Errors(t *testing.T) {
	f := newV1Fix(t)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	unknownID := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name string
		call func() error
		want error // nil: any error
	}{
		{"tags of unknown repo", func() error { _, err := c.Tags(ctx, "team/nope"); return err }, registry.ErrNotFound},
		{"resolve unknown repo", func() error { _, err := c.Resolve(ctx, "nope", "latest", registry.Platform{}); return err }, registry.ErrNotFound},
		{"resolve unknown tag", func() error { _, err := c.Resolve(ctx, "team/app", "2.0", registry.Platform{}); return err }, registry.ErrNotFound},
		{"resolve unknown image", func() error { _, err := c.Resolve(ctx, "team/app", unknownID, registry.Platform{}); return err }, registry.ErrNotFound},
		{"resolve bad tag", func() error { _, err := c.Resolve(ctx, "team/app", "-bad", registry.Platform{}); return err }, nil},
		{"bad repo name", func() error { _, err := c.Tags(ctx, "Team/App"); return err }, nil},
		{"open unknown layer, size unknown", func() error {
			_, err := c.OpenBlob(ctx, "team/app", registry.Layer{ID: unknownID, Size: -1})
			return err
		}, registry.ErrNotFound},
		{"open unknown layer, size known", func() error {
			b, err := c.OpenBlob(ctx, "team/app", registry.Layer{ID: unknownID, Size: 10})
			if err != nil {
				return err
			}
			_, err = b.ReadAt(ctx, make([]byte, 4), 0)
			return err
		}, registry.ErrNotFound},
		{"open bad layer ID", func() error { _, err := c.OpenBlob(ctx, "team/app", registry.Layer{ID: "../x", Size: 1}); return err }, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatalf("got nil error, want %v", tt.want)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrUnauthorized)) {
				t.Errorf("got %v, want a plain error", err)
			}
		})
	}
}

func TestV1BasicAuth(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithBasicAuth("alice", "secret"))
	for _, tt := range []struct {
		name, user, pass string
		want             error
	}{
		{"no credentials", "", "", registry.ErrUnauthorized},
		{"bad password", "alice", "wrong", registry.ErrUnauthorized},
		{"right", "alice", "secret", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{Username: tt.user, Password: tt.pass})
			_, err := c.Tags(context.Background(), "team/app")
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestV1TokensAndCookies checks the handshake's token and cookie are sent
// on every endpoint request, and that an expired token is renewed once.
func TestV1TokensAndCookies(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithTokenChecks(), registrytest.V1WithCookieRequired())
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	img, err := c.Resolve(ctx, "team/app", "1.0", registry.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.OpenBlob(ctx, "team/app", img.Layers[2])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(ctx, make([]byte, 10), 5); err != nil {
		t.Fatal(err)
	}
	reqs := f.s.Requests()
	for _, r := range reqs {
		switch r.Route {
		case "images":
			if r.XDockerToken != "true" {
				t.Errorf("%s: X-Docker-Token %q, want true", r.Path, r.XDockerToken)
			}
		default:
			if !strings.HasPrefix(r.Authorization, "Token signature=") || !strings.Contains(r.Authorization, `repository="team/app"`) || !r.HadCookie || (r.Status != 200 && r.Status != 206 && r.Status != 0) { // 0: handler still finishing
				t.Errorf("%s: Authorization %q cookie %v status %d; want the token, the cookie, success", r.Path, r.Authorization, r.HadCookie, r.Status)
			}
		}
	}
	if got := f.s.Count("images"); got != 1 {
		t.Errorf("handshakes: got %d, want 1", got)
	}

	f.s.ExpireTokens()
	if _, err := c.Tags(ctx, "team/app"); err != nil {
		t.Fatalf("Tags after expiry: %v", err)
	}
	if got := f.s.Count("images"); got != 2 {
		t.Errorf("handshakes after expiry: got %d, want 2", got)
	}
	// A second repository needs its own token.
	if _, err := c.Tags(ctx, "busybox"); err != nil {
		t.Fatalf("Tags busybox: %v", err)
	}
	if got := f.s.Count("images"); got != 3 {
		t.Errorf("handshakes after a second repository: got %d, want 3", got)
	}
}

func TestV1FailOver(t *testing.T) {
	ctx := context.Background()
	t.Run("dead endpoint first", func(t *testing.T) {
		f := newV1Fix(t)
		f.s.SetEndpoints(registrytest.V1DeadHost(t), f.s.Host)
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
		if _, err := c.Resolve(ctx, "team/app", "1.0", registry.Platform{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("5xx endpoint first, remembered", func(t *testing.T) {
		f := newV1Fix(t, registrytest.V1WithListeners(3))
		bad, good := f.s.Hosts[1], f.s.Hosts[2]
		f.s.SetEndpoints(bad, good)
		f.s.InjectFault(registrytest.V1Fault{Host: bad, Status: 503})
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
		for i := 0; i < 3; i++ {
			if _, err := c.Resolve(ctx, "team/app", "1.0", registry.Platform{}); err != nil {
				t.Fatal(err)
			}
		}
		hits := map[string]int{}
		for _, r := range f.s.Requests() {
			if r.Route != "images" {
				hits[r.Host]++
			}
		}
		if hits[bad] != 1 || hits[good] == 0 || hits[f.s.Host] != 0 {
			t.Errorf("requests per host: got %v; want 1 on the failing %s, the rest on %s", hits, bad, good)
		}
	})
	t.Run("all endpoints dead", func(t *testing.T) {
		f := newV1Fix(t)
		f.s.SetEndpoints(registrytest.V1DeadHost(t), registrytest.V1DeadHost(t))
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{MaxRetries: 1})
		_, err := c.Tags(ctx, "team/app")
		if err == nil || errors.Is(err, registry.ErrNotFound) {
			t.Errorf("got %v, want a connection error", err)
		}
	})
	t.Run("no endpoints header", func(t *testing.T) {
		f := newV1Fix(t)
		f.s.SetEndpoints()
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
		if _, err := c.Tags(ctx, "team/app"); err != nil {
			t.Errorf("got %v, want the index used as the endpoint", err)
		}
	})
}

func TestV1Retries(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		fault   registrytest.V1Fault
		retries int
		wantErr bool
	}{
		{"503 twice", registrytest.V1Fault{Path: "/v1/repositories/team/app/tags", Status: 503, Times: 2}, 4, false},
		{"429 with Retry-After", registrytest.V1Fault{Path: "/v1/repositories/team/app/tags", Status: 429, RetryAfter: "0", Times: 1}, 4, false},
		{"500 on the index", registrytest.V1Fault{Path: "/v1/repositories/team/app/images", Status: 500, Times: 1}, 4, false},
		{"503 forever", registrytest.V1Fault{Path: "/v1/repositories/team/app/tags", Status: 503}, 2, true},
		{"no retries", registrytest.V1Fault{Path: "/v1/repositories/team/app/tags", Status: 502, Times: 1}, -1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newV1Fix(t)
			f.s.InjectFault(tt.fault)
			c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{MaxRetries: tt.retries})
			_, err := c.Tags(ctx, "team/app")
			if (err != nil) != tt.wantErr {
				t.Fatalf("got %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !strings.Contains(err.Error(), fmt.Sprint(tt.fault.Status)) {
				t.Errorf("error %q does not name the status %d", err, tt.fault.Status)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		f := newV1Fix(t)
		f.s.InjectFault(registrytest.V1Fault{Status: 503})
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{MaxRetries: 1000, RetryBase: 50 * time.Millisecond, RetryMax: 50 * time.Millisecond})
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Tags(ctx, "team/app")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v after cancellation", d)
		}
	})
}

func v1Open(t *testing.T, c registry.Client, repo string, l registry.Layer) blobio.Source {
	t.Helper()
	b, err := c.OpenBlob(context.Background(), repo, l)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestV1BlobReadAt(t *testing.T) {
	f := newV1Fix(t)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: -1}) // size from X-Docker-Size
	data := f.bigBytes
	size := int64(len(data))
	if b.Size() != size || b.Key() != "v1:"+f.s.Host+"/"+f.big.ID {
		t.Fatalf("got size %d key %q, want %d %q", b.Size(), b.Key(), size, "v1:"+f.s.Host+"/"+f.big.ID)
	}
	for _, tt := range []struct {
		off     int64
		n       int
		wantN   int
		wantEOF bool
	}{
		{0, 10, 10, false},
		{12345, 4096, 4096, false},
		{size - 10, 10, 10, false},
		{size - 5, 10, 5, true},
		{size, 1, 0, true},
		{size + 100, 1, 0, true},
		{0, int(size), int(size), false},
		{7, 0, 0, false},
	} {
		t.Run(fmt.Sprintf("%d+%d", tt.off, tt.n), func(t *testing.T) {
			p := make([]byte, tt.n)
			n, err := b.ReadAt(ctx, p, tt.off)
			if n != tt.wantN || (err == io.EOF) != tt.wantEOF || (err != nil && err != io.EOF) {
				t.Fatalf("got %d, %v; want %d, EOF %v", n, err, tt.wantN, tt.wantEOF)
			}
			if n > 0 && !bytes.Equal(p[:n], data[tt.off:tt.off+int64(n)]) {
				t.Errorf("wrong bytes at %d", tt.off)
			}
		})
	}
	if _, err := b.ReadAt(ctx, make([]byte, 1), -1); err == nil {
		t.Errorf("negative offset: got nil error")
	}
	if _, err := b.Open(ctx, size-1, 2); err == nil {
		t.Errorf("Open past the end: got nil error")
	}
	rc, err := b.Open(ctx, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got, want := fmt.Sprintf("%x", h.Sum(nil)), fmt.Sprintf("%x", sha256.Sum256(data)); got != want {
		t.Errorf("stream sha256: got %s, want %s", got, want)
	}
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Errorf("read after close: got nil error")
	}
}

// TestV1BlobRange checks that a ranged read asks for exactly its bytes when
// the endpoint advertises ranges, and reads right when it ignores them.
func TestV1BlobRange(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name       string
		opts       []registrytest.V1Option
		wantRanges []string // Range header of each layer request
		wantServed int64    // -1: don't check
	}{
		{"honoured", nil, []string{"bytes=5000-5099", "bytes=9000-9099"}, 200},
		{"ignored", []registrytest.V1Option{registrytest.V1WithoutRanges()}, []string{"bytes=5000-5099", "bytes=9000-9099"}, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newV1Fix(t, tt.opts...)
			c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
			b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: int64(len(f.bigBytes))})
			f.s.ResetLog()
			for _, off := range []int64{5000, 9000} {
				p := make([]byte, 100)
				if n, err := b.ReadAt(ctx, p, off); n != 100 || err != nil || !bytes.Equal(p, f.bigBytes[off:off+100]) {
					t.Fatalf("ReadAt %d: got %d, %v (bytes equal %v)", off, n, err, bytes.Equal(p, f.bigBytes[off:off+100]))
				}
			}
			var got []string
			for _, r := range f.s.Requests() {
				if r.Route == "layer" {
					got = append(got, r.Range)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantRanges) {
				t.Errorf("Range headers: got %q, want %q", got, tt.wantRanges)
			}
			if tt.wantServed >= 0 {
				if served := f.s.LayerBytesServed(); served != tt.wantServed {
					t.Errorf("layer bytes served: got %d, want %d", served, tt.wantServed)
				}
			}
		})
	}
}

// TestV1BlobResume reads a layer through bodies cut mid-way and checks the
// exact bytes arrive, resuming with a Range from the next byte.
func TestV1BlobResume(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name       string
		opts       []registrytest.V1Option
		cut        registrytest.V1Fault
		off        int64
		wantRanges []string // nil: don't check
		wantErr    bool
	}{
		{"cut 3 times, ranges", nil, registrytest.V1Fault{CutAfter: 300000, Times: 3}, 0,
			[]string{"", "bytes=300000-1050111", "bytes=600000-1050111", "bytes=900000-1050111"}, false},
		{"cut from an offset", nil, registrytest.V1Fault{CutAfter: 100000, Times: 1}, 777, []string{"bytes=777-1050111", "bytes=100777-1050111"}, false},
		{"cut 2 times, no ranges", []registrytest.V1Option{registrytest.V1WithoutRanges()}, registrytest.V1Fault{CutAfter: 300000, Times: 2}, 0,
			[]string{"", "bytes=300000-1050111", "bytes=300000-1050111"}, false},
		{"cut forever, no ranges", []registrytest.V1Option{registrytest.V1WithoutRanges()}, registrytest.V1Fault{CutAfter: 300000}, 0, nil, true},
		{"cut forever at every step, ranges", nil, registrytest.V1Fault{CutAfter: 200000}, 0, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newV1Fix(t, tt.opts...)
			if int64(len(f.bigBytes)) != 1050112 {
				t.Fatalf("fixture size changed: %d; update the expected ranges", len(f.bigBytes))
			}
			c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
			b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: int64(len(f.bigBytes))})
			f.s.ResetLog()
			f.s.InjectFault(tt.cut)
			rc, err := b.Open(ctx, tt.off, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			want := f.bigBytes[tt.off:]
			if !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("wrong bytes before byte %d", len(got))
			}
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got nil error after %d bytes, want one", len(got))
				}
				return
			}
			if err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("got %d bytes, %v; want the %d bytes", len(got), err, len(want))
			}
			var ranges []string
			for _, r := range f.s.Requests() {
				if r.Route == "layer" {
					ranges = append(ranges, r.Range)
				}
			}
			if tt.wantRanges != nil && fmt.Sprint(ranges) != fmt.Sprint(tt.wantRanges) {
				t.Errorf("Range headers: got %q, want %q", ranges, tt.wantRanges)
			}
		})
	}
}

// TestV1BlobWrongSize checks that a layer that is not the size the caller
// said gives an error, never bytes: 416 past the real end, and a 200 of the
// wrong length.
func TestV1BlobWrongSize(t *testing.T) {
	f := newV1Fix(t)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	real := int64(len(f.bigBytes))
	b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: real + 10})
	if _, err := b.ReadAt(ctx, make([]byte, 4), real+2); err == nil || !strings.Contains(err.Error(), "416") {
		t.Errorf("ReadAt past the real end: got %v, want a 416 error", err)
	}
	if _, err := b.ReadAt(ctx, make([]byte, real+10), 0); err == nil {
		t.Errorf("whole read of a wrong-size layer: got nil error")
	}
	s2 := registrytest.StartV1Server(t, registrytest.V1WithoutRanges())
	imgs, err := s2.AddImage("x/y", "t", registrytest.V1LayerSpec{Tar: f.bigBytes})
	if err != nil {
		t.Fatal(err)
	}
	c2 := newV1TestClient(t, s2.Host, registry.V1TestOptions{})
	b2 := v1Open(t, c2, "x/y", registry.Layer{ID: imgs[0].ID, Size: real - 1})
	if _, err := b2.ReadAt(ctx, make([]byte, 4), 10); err == nil || !strings.Contains(err.Error(), "served") {
		t.Errorf("200 of the wrong length: got %v, want an error", err)
	}
}

func TestV1BlobConcurrent(t *testing.T) {
	f := newV1Fix(t)
	f.s.InjectFault(registrytest.V1Fault{CutAfter: 3000, Times: 10})
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: -1})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 20; i++ {
				off := r.Int64N(int64(len(f.bigBytes)))
				p := make([]byte, 1+r.IntN(8192))
				n, err := b.ReadAt(context.Background(), p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], f.bigBytes[off:off+int64(n)]) {
					errs <- fmt.Errorf("wrong bytes at %d", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestV1VerifyLayer checks layers against the tarsum checksums the index
// lists, and that a changed JSON or a missing checksum fails.
func TestV1VerifyLayer(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithTokenChecks())
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	ctx := context.Background()
	img, err := c.Resolve(ctx, "team/app", "1.0", registry.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range img.Layers {
		if !strings.HasPrefix(l.Checksum, "tarsum+sha256:") {
			t.Errorf("layer %d checksum %q: want tarsum+sha256:…", i, l.Checksum)
		}
		if err := c.VerifyLayer(ctx, "team/app", l); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
	}
	tampered := img.Layers[1]
	tampered.JSON = append([]byte(nil), tampered.JSON...)
	tampered.JSON[len(tampered.JSON)-1] = ' '
	if err := c.VerifyLayer(ctx, "team/app", tampered); !errors.Is(err, tarsum.ErrMismatch) {
		t.Errorf("changed JSON: got %v, want a tarsum mismatch", err)
	}
	none := img.Layers[0]
	none.Checksum = ""
	if err := c.VerifyLayer(ctx, "team/app", none); err == nil {
		t.Errorf("no checksum: got nil error")
	}
}

// TestV1Stalls checks that a request that hangs, before its headers or in
// the middle of a layer body, is given up after RequestTimeout and retried
// (another endpoint, or a resume), with the exact bytes in the end.
func TestV1Stalls(t *testing.T) {
	ctx := context.Background()
	t.Run("before headers, next endpoint", func(t *testing.T) {
		f := newV1Fix(t, registrytest.V1WithListeners(3))
		f.s.SetEndpoints(f.s.Hosts[1], f.s.Hosts[2])
		f.s.InjectFault(registrytest.V1Fault{Host: f.s.Hosts[1], Stall: 10 * time.Second})
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{RequestTimeout: 100 * time.Millisecond})
		start := time.Now()
		if _, err := c.Tags(ctx, "team/app"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("mid-body, resumed", func(t *testing.T) {
		f := newV1Fix(t)
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{RequestTimeout: 200 * time.Millisecond})
		b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: int64(len(f.bigBytes))})
		f.s.ResetLog()
		f.s.InjectFault(registrytest.V1Fault{CutAfter: 400000, Stall: 10 * time.Second, Times: 1})
		rc, err := b.Open(ctx, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, f.bigBytes) {
			t.Fatalf("got %d bytes, %v; want the %d bytes", len(got), err, len(f.bigBytes))
		}
		if n := f.s.Count("layer"); n != 2 {
			t.Errorf("layer requests: got %d, want 2", n)
		}
	})
	t.Run("every endpoint stalls", func(t *testing.T) {
		f := newV1Fix(t)
		f.s.InjectFault(registrytest.V1Fault{Path: "/v1/repositories/team/app/tags", Stall: 10 * time.Second})
		c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{RequestTimeout: 50 * time.Millisecond, MaxRetries: 1})
		if _, err := c.Tags(ctx, "team/app"); err == nil || !strings.Contains(err.Error(), "no response bytes") {
			t.Errorf("got %v, want a timeout error", err)
		}
	})
}

// TestV1RangeIgnored reads at any offset of a layer from an endpoint that
// ignores Range: each answer is the whole layer, read past the bytes asked.
func TestV1RangeIgnored(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithoutRanges())
	ctx := context.Background()
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: int64(len(f.bigBytes))})
	for _, off := range []int64{0, 5000, int64(len(f.bigBytes)) - 100} {
		p := make([]byte, 100)
		if _, err := b.ReadAt(ctx, p, off); err != nil || !bytes.Equal(p, f.bigBytes[off:off+100]) {
			t.Errorf("ReadAt(%d): %v (bytes equal %v)", off, err, bytes.Equal(p, f.bigBytes[off:off+100]))
		}
	}
}

// TestV1LayerRedirect follows a layer redirect to a storage host and checks
// the registry's token is not sent there, while Range still is.
func TestV1LayerRedirect(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithTokenChecks())
	storage := registrytest.StartV1Server(t)
	if _, err := storage.AddImage("store/x", "", registrytest.V1LayerSpec{Tar: f.bigBytes}); err != nil {
		t.Fatal(err)
	}
	// Same hostname, other port: Go alone would send the Authorization.
	f.s.SetLayerRedirect(storage.URL)
	c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
	b := v1Open(t, c, "team/big", registry.Layer{ID: f.big.ID, Size: -1})
	p := make([]byte, 1000)
	if _, err := b.ReadAt(context.Background(), p, 4096); err != nil || !bytes.Equal(p, f.bigBytes[4096:5096]) {
		t.Fatalf("ReadAt through redirect: %v", err)
	}
	reqs := storage.Requests()
	if len(reqs) != 1 || reqs[0].Authorization != "" || reqs[0].Range != "bytes=4096-5095" {
		t.Errorf("storage saw %+v; want one request with the Range and no Authorization", reqs)
	}
}

// TestV1SizeProbe checks a layer whose JSON has no X-Docker-Size gets its
// size from a one-byte request, with and without Range support.
func TestV1SizeProbe(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []registrytest.V1Option
	}{
		{"ranges", []registrytest.V1Option{registrytest.V1WithoutSizeHeader()}},
		{"no ranges", []registrytest.V1Option{registrytest.V1WithoutSizeHeader(), registrytest.V1WithoutRanges()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newV1Fix(t, tt.opts...)
			c := newV1TestClient(t, f.s.Host, registry.V1TestOptions{})
			img, err := c.Resolve(context.Background(), "team/big", "latest", registry.Platform{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Layers[0].Size != -1 {
				t.Errorf("Layer.Size without X-Docker-Size: got %d, want -1", img.Layers[0].Size)
			}
			b := v1Open(t, c, "team/big", img.Layers[0])
			if b.Size() != int64(len(f.bigBytes)) {
				t.Errorf("Size: got %d, want %d", b.Size(), len(f.bigBytes))
			}
			p := make([]byte, 10)
			if _, err := b.ReadAt(context.Background(), p, b.Size()-10); err != nil || !bytes.Equal(p, f.bigBytes[len(f.bigBytes)-10:]) {
				t.Errorf("ReadAt the end: %v", err)
			}
		})
	}
}

// TestV1ThroughFaultProxy reads a whole layer, and spans of it, through the
// shared fault proxy in front of the v1 server: bodies cut mid-way, a 503,
// a Range dropped, requests and connections dropped. The bytes must be
// exact.
func TestV1ThroughFaultProxy(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithTokenChecks())
	p := registrytest.StartFaultProxy(t, f.s.URL)
	f.s.SetEndpoints(p.Host)
	layer := registrytest.PathContains("/layer")
	p.CutBody(150000, 3, layer)
	p.FailStatus(503, "", 1, layer)
	p.IgnoreRange(1, layer)
	p.DropRequests(5, registrytest.PathContains("/v1/"))
	p.DropEveryConnection(3)
	c := newV1TestClient(t, p.Host, registry.V1TestOptions{MaxRetries: 8})
	ctx := context.Background()
	img, err := c.Resolve(ctx, "team/big", "latest", registry.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	b := v1Open(t, c, "team/big", img.Layers[0])
	rc, err := b.Open(ctx, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || sha256.Sum256(got) != sha256.Sum256(f.bigBytes) {
		t.Fatalf("whole layer: got %d bytes, %v; want the %d bytes", len(got), err, len(f.bigBytes))
	}
	for _, off := range []int64{0, 4095, 500000, int64(len(f.bigBytes)) - 3000} {
		q := make([]byte, 3000)
		if n, err := b.ReadAt(ctx, q, off); n != len(q) || err != nil || !bytes.Equal(q, f.bigBytes[off:off+3000]) {
			t.Errorf("ReadAt %d: got %d, %v", off, n, err)
		}
	}
	if err := c.VerifyLayer(ctx, "team/big", img.Layers[0]); err != nil {
		t.Errorf("VerifyLayer through the proxy: %v", err)
	}
	if p.DroppedConnections() == 0 {
		t.Errorf("the proxy dropped no connection; the test tests less than it says")
	}
}

// TestV1ThroughNew checks the wiring of New: API v1, and auto falling back
// to v1 when GET /v2/ is 404, with Basic credentials from the Options.
func TestV1ThroughNew(t *testing.T) {
	f := newV1Fix(t, registrytest.V1WithBasicAuth("alice", "secret"))
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		opts registry.Options
		want error
	}{
		{"v1", registry.Options{API: registry.APIV1, Authenticator: &authn.Basic{Username: "alice", Password: "secret"}}, nil},
		{"auto", registry.Options{API: registry.APIAuto, Authenticator: &authn.Basic{Username: "alice", Password: "secret"}}, nil},
		{"auto, anonymous", registry.Options{Authenticator: authn.Anonymous}, registry.ErrUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.RetryBackoffMin, tt.opts.RetryBackoffMax = time.Millisecond, 10*time.Millisecond
			c, err := registry.New(ctx, f.s.Host, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.API() != registry.APIV1 || c.Host() != f.s.Host {
				t.Errorf("got API %q host %q, want v1 %s", c.API(), c.Host(), f.s.Host)
			}
			img, err := c.Resolve(ctx, "team/app", "1.0", registry.Platform{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Resolve: got %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			b, err := c.OpenBlob(ctx, "team/app", img.Layers[2])
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, b.Size())
			if _, err := b.ReadAt(ctx, p, 0); err != nil || !bytes.Equal(p, f.app[2].Layer) {
				t.Errorf("layer: %v", err)
			}
		})
	}
}
