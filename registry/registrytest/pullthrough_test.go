package registrytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The caching rules of distribution's pull-through cache (proxy.remoteurl),
// as seen from the origin's request log. docs/design/fleet.md lists them;
// these tests keep that list true for the distribution version in go.mod.

const fleetRepo = "fleet/app"

// pullThroughSetup is an origin holding one blob and one tagged manifest,
// and a pull-through cache of it.
type pullThroughSetup struct {
	origin, cache *Registry
	blob          []byte
	blobDigest    digest.Digest
	manifest      digest.Digest
}

// newPullThroughSetup pushes a blob of blobSize bytes and a tiny manifest
// tagged v1 to a new origin; the cache forwards to upstreamURL(origin)
// (nil: the origin itself). The origin's counters start at zero.
func newPullThroughSetup(t *testing.T, blobSize int64, upstreamURL func(*Registry) string) *pullThroughSetup {
	t.Helper()
	origin := StartRegistry(t)
	s := &pullThroughSetup{origin: origin, blob: Generated{Seed: 7, Size: blobSize}.Bytes()}
	p, ctx := NewPusher(origin), context.Background()
	var err error
	if s.blobDigest, err = p.PushBytes(ctx, fleetRepo, s.blob); err != nil {
		t.Fatal(err)
	}
	manifest, config := TinyManifest()
	if _, err := p.PushBytes(ctx, fleetRepo, config); err != nil {
		t.Fatal(err)
	}
	if err := p.PushManifest(ctx, fleetRepo, "v1", ocispec.MediaTypeImageManifest, manifest); err != nil {
		t.Fatal(err)
	}
	s.manifest = digest.FromBytes(manifest)
	up := origin.URL
	if upstreamURL != nil {
		up = upstreamURL(origin)
	}
	s.cache = StartRegistry(t, WithPullThrough(up))
	origin.ResetStats()
	return s
}

func (s *pullThroughSetup) blobURL() string {
	return s.cache.URL + "/v2/" + fleetRepo + "/blobs/" + s.blobDigest.String()
}

// originCalls describes the origin's requests since the last reset, as
// "METHOD what [range] status", leaving out the GET /v2/ pings, which it
// counts apart. what is blob, manifest:REF or the path's last element.
func originCalls(r *Registry) (calls []string, pings int) {
	for _, q := range r.Requests() {
		if q.Path == "/v2/" {
			pings++
			continue
		}
		what := q.Path[strings.LastIndex(q.Path, "/")+1:]
		switch {
		case strings.Contains(q.Path, "/blobs/"):
			what = "blob"
		case strings.Contains(q.Path, "/manifests/"):
			what = "manifest:" + what
			if strings.HasPrefix(what, "manifest:sha256:") {
				what = "manifest:digest"
			}
		}
		c := fmt.Sprintf("%s %s %d", q.Method, what, q.Status)
		if q.Range != "" {
			c += " " + q.Range
		}
		calls = append(calls, c)
	}
	return calls, pings
}

func TestPullThroughRules(t *testing.T) {
	s := newPullThroughSetup(t, 300000, nil)
	ranged := http.Header{"Range": {"bytes=1000-1999"}}
	accept := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	manifests := s.cache.URL + "/v2/" + fleetRepo + "/manifests/"
	steps := []struct {
		name       string
		url        string
		header     http.Header
		wantStatus int
		wantBody   []byte // nil: not checked
		wantCalls  []string
	}{
		{"blob miss: Range ignored, whole blob fetched and stored", s.blobURL(), ranged,
			200, s.blob, []string{"HEAD blob 200", "GET blob 200"}},
		{"blob hit: Range honoured, origin not asked", s.blobURL(), ranged,
			206, s.blob[1000:2000], nil},
		{"tag: looked up at the origin, manifest fetched", manifests + "v1", accept,
			200, nil, []string{"HEAD manifest:v1 200", "GET manifest:v1 200"}},
		{"tag again: looked up again, manifest from the cache", manifests + "v1", accept,
			200, nil, []string{"HEAD manifest:v1 200"}},
		{"manifest by digest: from the cache", manifests + s.manifest.String(), accept,
			200, nil, nil},
		{"missing tag", manifests + "nope", accept,
			404, nil, []string{"HEAD manifest:nope 404", "GET manifest:nope 404"}},
		{"missing tag again: no negative caching", manifests + "nope", accept,
			404, nil, []string{"HEAD manifest:nope 404", "GET manifest:nope 404"}},
		{"missing blob: asked every time", s.cache.URL + "/v2/" + fleetRepo + "/blobs/" + digest.FromString("none").String(), nil,
			404, nil, []string{"HEAD blob 404"}},
		{"tag list: forwarded", s.cache.URL + "/v2/" + fleetRepo + "/tags/list", nil,
			200, nil, []string{"GET list 200"}},
	}
	for _, st := range steps {
		status, _, body, err := fetch(t, st.url, st.header)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		// The cache stores a blob after its client has the last byte: a
		// request before the handler returns would be a miss again.
		waitRequestsDone(t, s.cache)
		calls, pings := originCalls(s.origin)
		s.origin.ResetStats()
		t.Logf("%s: %d, origin: %q and %d pings", st.name, status, calls, pings)
		if status != st.wantStatus {
			t.Errorf("%s: got status %d, want %d", st.name, status, st.wantStatus)
		}
		if st.wantBody != nil && !bytes.Equal(body, st.wantBody) {
			t.Errorf("%s: got %d bytes, not the %d wanted", st.name, len(body), len(st.wantBody))
		}
		if !slices.Equal(calls, st.wantCalls) {
			t.Errorf("%s: origin got %q, want %q", st.name, calls, st.wantCalls)
		}
		// An anonymous origin sends no challenge to remember, so the
		// cache pings /v2/ again before it asks anything.
		if len(calls) > 0 && pings == 0 {
			t.Errorf("%s: origin got no /v2/ ping before %q", st.name, calls)
		}
	}
}

// A client that hangs up during a miss cancels the cache's copy: the
// blob is not stored, and the next request fetches it from the origin again.
func TestPullThroughAbortedMissNotStored(t *testing.T) {
	// Larger than what socket buffers absorb, so the hang-up reaches the
	// cache while it still copies.
	s := newPullThroughSetup(t, 16<<20, nil)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	req, err := http.NewRequest(http.MethodGet, s.blobURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=0-999")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitRequestsDone(t, s.cache)

	status, _, body, err := fetch(t, s.blobURL(), http.Header{"Range": {"bytes=0-999"}})
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 || !bytes.Equal(body, s.blob) {
		t.Errorf("after an aborted miss: got status %d and %d bytes, want 200 and the whole blob (a miss again)", status, len(body))
	}
	calls, _ := originCalls(s.origin)
	if want := []string{"HEAD blob 200", "GET blob 200", "HEAD blob 200", "GET blob 200"}; !slices.Equal(calls, want) {
		t.Errorf("origin got %q, want %q", calls, want)
	}
	var sent int64
	for _, q := range s.origin.Requests() {
		if q.Method == http.MethodGet && strings.Contains(q.Path, "/blobs/") {
			sent += q.Bytes
		}
	}
	t.Logf("origin sent %d blob bytes for a %d-byte blob: one aborted and one whole copy", sent, len(s.blob))
}

// Two misses of the same blob at once both reach the origin: the second
// is streamed through without being stored.
func TestPullThroughConcurrentMisses(t *testing.T) {
	gate := &blobGate{arrived: make(chan struct{}), release: make(chan struct{})}
	s := newPullThroughSetup(t, 300000, func(origin *Registry) string {
		u, err := url.Parse(origin.URL)
		if err != nil {
			t.Fatal(err)
		}
		gate.next = httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(gate)
		t.Cleanup(srv.Close)
		return srv.URL
	})
	first := make(chan error, 1)
	go func() {
		status, _, body, err := fetch(t, s.blobURL(), nil)
		if err == nil && (status != 200 || !bytes.Equal(body, s.blob)) {
			err = fmt.Errorf("got status %d and %d bytes, want 200 and the blob", status, len(body))
		}
		first <- err
	}()
	select {
	case <-gate.arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the first miss never reached the origin")
	}
	status, _, body, err := fetch(t, s.blobURL(), nil)
	close(gate.release)
	if err != nil || status != 200 || !bytes.Equal(body, s.blob) {
		t.Errorf("second miss: got status %d, %d bytes, %v; want 200 and the blob", status, len(body), err)
	}
	if err := <-first; err != nil {
		t.Errorf("first miss: %v", err)
	}
	waitRequestsDone(t, s.cache)
	status, _, _, err = fetch(t, s.blobURL(), http.Header{"Range": {"bytes=0-9"}})
	if err != nil || status != 206 {
		t.Errorf("after both: got status %d, %v; want 206 (the first miss stored the blob)", status, err)
	}
	calls, _ := originCalls(s.origin)
	if got := countOf(calls, "GET blob 200"); got != 2 {
		t.Errorf("origin blob GETs: got %d, want 2 (one per concurrent miss); calls %q", got, calls)
	}
}

// blobGate holds the first blob GET until release, telling arrived.
type blobGate struct {
	next             http.Handler
	once             sync.Once
	arrived, release chan struct{}
}

func (g *blobGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.arrived)
			<-g.release
		}
	}
	g.next.ServeHTTP(w, r)
}

func countOf(calls []string, c string) int {
	n := 0
	for _, x := range calls {
		if x == c {
			n++
		}
	}
	return n
}

// waitRequestsDone waits until every request r logged has been answered.
func waitRequestsDone(t *testing.T, r *Registry) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		done := true
		for _, q := range r.Requests() {
			done = done && q.Done
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the registry's requests to end")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
