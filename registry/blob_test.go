package registry

import (
	"github.com/regfs/regfs/blobio"

	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// blobTestLargeSize is the content size of test/large in these tests: big
// enough for many cuts and resumes, small enough for -race.
const blobTestLargeSize = 6 << 20

// largeRegistry is a registry with the fixtures, test/large included at
// blobTestLargeSize, and the large blob's bytes.
func largeRegistry(t *testing.T, opts ...registrytest.Option) (*registrytest.Registry, *registrytest.Fixtures, []byte) {
	t.Helper()
	reg := registrytest.StartRegistry(t, opts...)
	fx := registrytest.PushFixtures(t, reg, registrytest.WithLargeSize(blobTestLargeSize))
	return reg, fx, layerBytes(t, fx.Large.Layers[0])
}

func layerBytes(t testing.TB, l *registrytest.Layer) []byte {
	t.Helper()
	if l.Blob != nil {
		return l.Blob
	}
	b, err := os.ReadFile(l.BlobPath)
	if err != nil {
		t.Fatalf("read layer blob: %v", err)
	}
	return b
}

func largeLayer(fx *registrytest.Fixtures) Layer {
	l := fx.Large.Layers[0]
	return Layer{Digest: l.Digest, Size: l.Size}
}

func sha(b []byte) digest.Digest { return digest.FromBytes(b) }

// readAllAt reads the whole blob with ReadAt in chunks of n bytes, in a
// random order.
func readAllAt(ctx context.Context, t *testing.T, b blobio.Source, n int) []byte {
	t.Helper()
	out := make([]byte, b.Size())
	offs := []int64{}
	for off := int64(0); off < b.Size(); off += int64(n) {
		offs = append(offs, off)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	for _, off := range offs {
		end := min(off+int64(n), b.Size())
		got, err := b.ReadAt(ctx, out[off:end], off)
		if err != nil && !(errors.Is(err, io.EOF) && end == b.Size()) {
			t.Fatalf("ReadAt(%d, %d): got %d bytes, %v", off, end-off, got, err)
		}
		if got != int(end-off) {
			t.Fatalf("ReadAt(%d, %d): got %d bytes", off, end-off, got)
		}
	}
	return out
}

func openAll(ctx context.Context, b blobio.Source) ([]byte, error) {
	rc, err := b.Open(ctx, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestBlobReads(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	c := newClient(t, reg.Host, testOptions())
	for _, l := range []Layer{largeLayer(fx), {Digest: fx.Large.Layers[0].Digest, Size: -1}} {
		b, err := c.OpenBlob(ctx, registrytest.RepoLarge, l)
		if err != nil {
			t.Fatalf("OpenBlob: %v", err)
		}
		if b.Size() != int64(len(want)) || b.Key() != l.Digest.String() {
			t.Fatalf("blob: got size %d key %s, want %d %s", b.Size(), b.Key(), len(want), l.Digest)
		}
		got, err := openAll(ctx, b)
		if err != nil || sha(got) != l.Digest {
			t.Fatalf("Open(0, -1): got %d bytes (%s), %v; want %s", len(got), sha(got), err, l.Digest)
		}
		tests := []struct{ off, n int64 }{
			{0, 1}, {0, 4096}, {1, 1}, {12345, 100000}, {int64(len(want)) - 1, 1},
			{int64(len(want)) - 4096, 4096}, {int64(len(want)) / 2, int64(len(want)) / 2}, {100, 0},
		}
		for _, tt := range tests {
			rc, err := b.Open(ctx, tt.off, tt.n)
			if err != nil {
				t.Fatalf("Open(%d, %d): %v", tt.off, tt.n, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, want[tt.off:tt.off+tt.n]) {
				t.Errorf("Open(%d, %d): got %d bytes, %v; want the blob's bytes", tt.off, tt.n, len(got), err)
			}
			p := make([]byte, tt.n)
			n, err := b.ReadAt(ctx, p, tt.off)
			if err != nil || int64(n) != tt.n || !bytes.Equal(p, want[tt.off:tt.off+tt.n]) {
				t.Errorf("ReadAt(%d, %d): got %d, %v", tt.off, tt.n, n, err)
			}
		}
		// Past the end: io.EOF after the bytes that exist.
		p := make([]byte, 10)
		n, err := b.ReadAt(ctx, p, int64(len(want))-4)
		if n != 4 || err != io.EOF || !bytes.Equal(p[:4], want[len(want)-4:]) {
			t.Errorf("ReadAt across the end: got %d, %v; want 4, io.EOF", n, err)
		}
		if n, err := b.ReadAt(ctx, p, int64(len(want))); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at the end: got %d, %v; want 0, io.EOF", n, err)
		}
		if _, err := b.ReadAt(ctx, p, -1); err == nil {
			t.Errorf("ReadAt(-1): got no error")
		}
		if _, err := b.Open(ctx, int64(len(want))-1, 2); err == nil {
			t.Errorf("Open past the end: got no error")
		}
	}
	// A ranged read asks only for its bytes.
	reg.ResetStats()
	b, _ := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	p := make([]byte, 1000)
	if _, err := b.ReadAt(ctx, p, 5000); err != nil {
		t.Fatal(err)
	}
	if st := reg.Stats(); st.BlobBytesServed != 1000 {
		t.Errorf("ReadAt of 1000 bytes: the registry served %d blob bytes", st.BlobBytesServed)
	}
	if rs := reg.Requests(); len(rs) != 1 || rs[0].Range != "bytes=5000-5999" {
		t.Errorf("ReadAt(5000, 1000): got requests %+v, want one with Range bytes=5000-5999", rs)
	}
}

// TestBlobResume reads the large blob through faults that break bodies,
// and checks every byte.
func TestBlobResume(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		fault   func(p *registrytest.FaultProxy)
		chunk   int // ReadAt chunk size
		resumes bool
		// timeout is the request watchdog: short only where a stall must
		// be caught; elsewhere a slow answer on a loaded machine (the race
		// detector, 2 CPUs) would count as a failed attempt.
		timeout time.Duration
	}{
		{"body cut after 300 KiB every time", func(p *registrytest.FaultProxy) {
			p.CutBody(300<<10, 0, registrytest.BlobGETs)
		}, 1 << 20, true, 0},
		{"every 3rd body cut after 10 KiB", func(p *registrytest.FaultProxy) {
			p.CutBodyEvery(10<<10, 3, registrytest.BlobGETs)
		}, 256 << 10, true, 0},
		{"every 4th connection dropped", func(p *registrytest.FaultProxy) {
			p.DropEveryConnection(4)
		}, 512 << 10, false, 0},
		{"every 3rd request dropped", func(p *registrytest.FaultProxy) {
			p.DropRequests(3, registrytest.BlobGETs)
		}, 512 << 10, false, 0},
		{"503 on every other blob request", func(p *registrytest.FaultProxy) {
			p.Add(registrytest.Fault{Match: registrytest.BlobGETs, Every: 2, Status: http.StatusServiceUnavailable})
		}, 512 << 10, false, 0},
		{"body stalls", func(p *registrytest.FaultProxy) {
			p.StallBody(64<<10, 3*time.Second, 2, registrytest.BlobGETs)
		}, 2 << 20, true, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy := registrytest.StartFaultProxy(t, reg.URL)
			o := testOptions()
			o.RequestTimeout = cmp.Or(tt.timeout, 5*time.Second)
			o.MaxRetries = 6
			c := newClient(t, proxy.Host, o)
			tt.fault(proxy)
			b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			got, err := openAll(ctx, b)
			if err != nil || sha(got) != fx.Large.Layers[0].Digest {
				t.Fatalf("Open(0, -1): got %d bytes (%s), %v; want %d bytes %s", len(got), sha(got), err,
					len(want), fx.Large.Layers[0].Digest)
			}
			got = readAllAt(ctx, t, b, tt.chunk)
			if sha(got) != fx.Large.Layers[0].Digest {
				t.Fatalf("ReadAt chunks of %d: wrong bytes", tt.chunk)
			}
			if r := b.(*v2Blob).rr.resumes.Load(); tt.resumes && r == 0 {
				t.Errorf("no resume happened: the fault did not bite")
			}
		})
	}
}

func TestBlobResumeGivesUp(t *testing.T) {
	reg, fx, _ := largeRegistry(t)
	ctx := context.Background()
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	o := testOptions()
	o.MaxResumes = 3
	c := newClient(t, proxy.Host, o)
	b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	// Every body is cut before its first byte: no progress, ever.
	h := proxy.Add(registrytest.Fault{Match: registrytest.BlobGETs, Cut: true, CutAfter: 0})
	p := make([]byte, 1000)
	n, err := b.ReadAt(ctx, p, 100)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt with every body cut: got %d, %v; want an unexpected EOF", n, err)
	}
	if got, want := h.Hits(), 1+o.MaxResumes; got != want {
		t.Errorf("got %d requests, want %d (1 + MaxResumes)", got, want)
	}
}

// tamperProxy is a reverse proxy to a registry that lets a test rewrite
// responses: flip a byte, drop or change headers.
func tamperProxy(t *testing.T, upstream string, modify func(r *http.Request, resp *http.Response) error) string {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error { return modify(resp.Request, resp) }
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// flipByte replaces resp's body with one whose byte at i is changed.
func flipByte(resp *http.Response, i int) error {
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if i < len(b) {
		b[i] ^= 0x20
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

func TestDigestMismatch(t *testing.T) {
	reg, fx := smallRegistry(t)
	ctx := context.Background()
	isManifest := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }
	isBlob := func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet
	}
	tests := []struct {
		name   string
		modify func(r *http.Request, resp *http.Response) error
		ref    string
	}{
		{"manifest by tag, Docker-Content-Digest kept", func(r *http.Request, resp *http.Response) error {
			if isManifest(r) {
				return flipByte(resp, 20)
			}
			return nil
		}, "latest"},
		{"manifest by digest, no Docker-Content-Digest", func(r *http.Request, resp *http.Response) error {
			if isManifest(r) {
				resp.Header.Del("Docker-Content-Digest")
				return flipByte(resp, 20)
			}
			return nil
		}, fx.Small.Digest.String()},
		{"manifest by tag, wrong Docker-Content-Digest", func(r *http.Request, resp *http.Response) error {
			if isManifest(r) {
				resp.Header.Set("Docker-Content-Digest", fx.Deep.Digest.String())
			}
			return nil
		}, "latest"},
		{"manifest by digest, another manifest served", func(r *http.Request, resp *http.Response) error {
			if isManifest(r) {
				resp.Header.Del("Docker-Content-Digest")
				resp.Body.Close()
				resp.Body = io.NopCloser(bytes.NewReader(fx.SmallDocker.Manifest))
				resp.ContentLength = int64(len(fx.SmallDocker.Manifest))
				resp.Header.Set("Content-Length", fmt.Sprint(len(fx.SmallDocker.Manifest)))
			}
			return nil
		}, fx.Small.Digest.String()},
		{"config", func(r *http.Request, resp *http.Response) error {
			if isBlob(r) && strings.HasSuffix(r.URL.Path, fx.Small.ConfigDigest.String()) {
				return flipByte(resp, 5)
			}
			return nil
		}, "latest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tamperProxy(t, reg.URL, tt.modify)
			c := newClient(t, host, testOptions())
			img, err := c.Resolve(ctx, registrytest.RepoSmall, tt.ref, Platform{})
			if !errors.Is(err, ErrDigestMismatch) || img != nil {
				t.Errorf("Resolve: got %v, %v; want ErrDigestMismatch and no image", img, err)
			}
		})
	}

	// A whole-blob stream with a wrong byte ends in ErrDigestMismatch.
	l := fx.Small.Layers[0]
	host := tamperProxy(t, reg.URL, func(r *http.Request, resp *http.Response) error {
		if isBlob(r) && strings.HasSuffix(r.URL.Path, l.Digest.String()) {
			return flipByte(resp, int(l.Size/2))
		}
		return nil
	})
	c := newClient(t, host, testOptions())
	b, err := c.OpenBlob(ctx, registrytest.RepoSmall, Layer{Digest: l.Digest, Size: l.Size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openAll(ctx, b); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Open(0, -1) of a tampered blob: got %v, want ErrDigestMismatch", err)
	}
}

// TestContentRangeChecked: a 206 whose Content-Range is not what was asked
// is an error, never bytes from the wrong offset.
func TestContentRangeChecked(t *testing.T) {
	reg, fx, _ := largeRegistry(t)
	ctx := context.Background()
	tests := []struct {
		name string
		cr   func(orig string) string
	}{
		{"shifted start", func(string) string { return "bytes 1-1000/" + fmt.Sprint(fx.Large.Layers[0].Size) }},
		{"other total", func(orig string) string { return strings.Split(orig, "/")[0] + "/12345678" }},
		{"garbage", func(string) string { return "bytes x-y/z" }},
		{"missing", func(string) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tamperProxy(t, reg.URL, func(r *http.Request, resp *http.Response) error {
				if resp.StatusCode == http.StatusPartialContent {
					if v := tt.cr(resp.Header.Get("Content-Range")); v == "" {
						resp.Header.Del("Content-Range")
					} else {
						resp.Header.Set("Content-Range", v)
					}
				}
				return nil
			})
			c := newClient(t, host, testOptions())
			b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 1000)
			if n, err := b.ReadAt(ctx, p, 0); err == nil || !strings.Contains(err.Error(), "Content-Range") {
				t.Errorf("ReadAt: got %d, %v; want a Content-Range error", n, err)
			}
		})
	}
}

func TestBlobRedirect(t *testing.T) {
	for _, tt := range []struct {
		name     string
		opts     []registrytest.Option
		hostname string
	}{
		{"basic auth, storage on another port", []registrytest.Option{registrytest.WithHtpasswd("bob", "pw")}, ""},
		{"basic auth, storage on another host name", []registrytest.Option{registrytest.WithHtpasswd("bob", "pw")}, "localhost"},
		{"token auth", []registrytest.Option{registrytest.WithTokenAuth("bob", "pw")}, ""},
		{"token auth, another host name", []registrytest.Option{registrytest.WithTokenAuth("bob", "pw")}, "localhost"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg, fx := smallRegistry(t, tt.opts...)
			proxy := registrytest.StartFaultProxy(t, reg.URL)
			if _, err := proxy.EnableBlobRedirect(tt.hostname); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c := newClient(t, proxy.Host, withAuth(testOptions(), "bob", "pw"))
			img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
			if err != nil {
				t.Fatalf("Resolve through redirects: %v", err)
			}
			checkImage(t, img, fx.Small)
			for _, l := range img.Layers {
				b, err := c.OpenBlob(ctx, registrytest.RepoSmall, l)
				if err != nil {
					t.Fatal(err)
				}
				got, err := openAll(ctx, b)
				if err != nil || sha(got) != l.Digest {
					t.Errorf("layer %s through a redirect: %d bytes, %v", l.Digest, len(got), err)
				}
				p := make([]byte, min(100, l.Size-1))
				if _, err := b.ReadAt(ctx, p, 1); err != nil {
					t.Errorf("ReadAt through a redirect: %v", err)
				}
			}
			if proxy.StorageRequests() == 0 {
				t.Errorf("no request reached the storage host: the redirect was not tested")
			}
			if n := proxy.StorageAuthorizationSeen(); n != 0 {
				t.Errorf("the storage host got an Authorization header %d times, want 0", n)
			}
		})
	}
}

// TestRetries: 500, 503 and 429 are retried, honouring Retry-After.
func TestRetries(t *testing.T) {
	reg, fx := smallRegistry(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		status     int
		retryAfter string
		times      int
		minElapsed time.Duration
	}{
		{"500 twice", http.StatusInternalServerError, "", 2, 0},
		{"503 with Retry-After 1", http.StatusServiceUnavailable, "1", 1, time.Second},
		{"429 with Retry-After 1", http.StatusTooManyRequests, "1", 1, time.Second},
		{"502 three times", http.StatusBadGateway, "", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy := registrytest.StartFaultProxy(t, reg.URL)
			c := newClient(t, proxy.Host, testOptions())
			h := proxy.FailStatus(tt.status, tt.retryAfter, tt.times, registrytest.ManifestRequests)
			start := time.Now()
			img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			checkImage(t, img, fx.Small)
			if h.Hits() != tt.times {
				t.Errorf("fault applied %d times, want %d", h.Hits(), tt.times)
			}
			if el := time.Since(start); el < tt.minElapsed {
				t.Errorf("Resolve took %v, want at least %v (Retry-After)", el, tt.minElapsed)
			}
		})
	}

	// Always failing: 1 + MaxRetries attempts, then a temporary error.
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	o := testOptions()
	o.MaxRetries = 3
	c := newClient(t, proxy.Host, o)
	h := proxy.FailStatus(http.StatusServiceUnavailable, "", 0, registrytest.ManifestRequests)
	_, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
	if err == nil || !IsTemporary(err) {
		t.Errorf("Resolve against a 503 wall: got %v, want a temporary error", err)
	}
	if h.Hits() != 4 {
		t.Errorf("got %d attempts, want 4", h.Hits())
	}
	// Not retried: 404, 401 and a Retry-After longer than RetryAfterMax.
	h.Remove()
	h = proxy.FailStatus(http.StatusTooManyRequests, "3600", 0, registrytest.ManifestRequests)
	start := time.Now()
	if _, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{}); err == nil || !strings.Contains(err.Error(), "retry after") {
		t.Errorf("Retry-After 3600: got %v, want an error saying so", err)
	}
	if h.Hits() != 1 || time.Since(start) > 5*time.Second {
		t.Errorf("Retry-After 3600: got %d attempts in %v, want 1 at once", h.Hits(), time.Since(start))
	}
	h.Remove()
	h = proxy.FailStatus(http.StatusNotFound, "", 0, registrytest.ManifestRequests)
	if _, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{}); !errors.Is(err, ErrNotFound) || h.Hits() != 1 {
		t.Errorf("404: got %v after %d attempts, want ErrNotFound after 1", err, h.Hits())
	}
}

// TestCancelEndsRetries: cancelling the context ends a retry loop, and a
// stalled read, at once.
func TestCancelEndsRetries(t *testing.T) {
	reg, fx, _ := largeRegistry(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	o := testOptions()
	o.MaxRetries = 100
	o.RetryAfterMax = time.Minute
	o.RequestTimeout = time.Minute
	c := newClient(t, proxy.Host, o)
	b, err := c.OpenBlob(context.Background(), registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		fault func() *registrytest.FaultHandle
		call  func(ctx context.Context) error
	}{
		{"waiting on Retry-After", func() *registrytest.FaultHandle {
			return proxy.FailStatus(http.StatusServiceUnavailable, "30", 0, registrytest.ManifestRequests)
		}, func(ctx context.Context) error {
			_, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
			return err
		}},
		{"waiting for headers", func() *registrytest.FaultHandle {
			return proxy.StallHeaders(30*time.Second, 0, registrytest.BlobGETs)
		}, func(ctx context.Context) error {
			_, err := b.ReadAt(ctx, make([]byte, 100), 0)
			return err
		}},
		{"waiting for body bytes", func() *registrytest.FaultHandle {
			return proxy.StallBody(1000, 30*time.Second, 0, registrytest.BlobGETs)
		}, func(ctx context.Context) error {
			_, err := b.ReadAt(ctx, make([]byte, 1<<20), 0)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.fault()
			defer h.Remove()
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			err := tt.call(ctx)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("returned %v after the call, want about 200ms", el)
			}
		})
	}
}

// TestConcurrentReads: many goroutines read one blob through faults.
func TestConcurrentReads(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	proxy.CutBodyEvery(20<<10, 5, registrytest.BlobGETs)
	o := testOptions()
	o.MaxRetries = 6
	c := newClient(t, proxy.Host, o)
	b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			p := make([]byte, 64<<10)
			for i := 0; i < 20; i++ {
				off := rng.Int64N(int64(len(want)))
				n, err := b.ReadAt(ctx, p, off)
				if err != nil && !(err == io.EOF && off+int64(n) == int64(len(want))) {
					errs <- fmt.Errorf("ReadAt(%d): %w", off, err)
					return
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					errs <- fmt.Errorf("ReadAt(%d): wrong bytes", off)
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

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
