package registrytest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// proxySetup is a registry holding one blob, and a proxy in front of it.
type proxySetup struct {
	reg   *Registry
	proxy *FaultProxy
	blob  []byte
	dgst  digest.Digest
}

const proxyRepo = "proxy/test"

func newProxySetup(t *testing.T, opts ...Option) *proxySetup {
	t.Helper()
	reg := StartRegistry(t, append([]Option{WithInMemoryStorage()}, opts...)...)
	blob := Generated{Seed: 99, Size: 200000}.Bytes()
	d, err := NewPusher(reg).PushBytes(context.Background(), proxyRepo, blob)
	if err != nil {
		t.Fatalf("push blob: %v", err)
	}
	reg.ResetStats()
	return &proxySetup{reg: reg, proxy: StartFaultProxy(t, reg.URL), blob: blob, dgst: d}
}

func (s *proxySetup) blobURL() string {
	return s.proxy.URL + "/v2/" + proxyRepo + "/blobs/" + s.dgst.String()
}

// fetch GETs u with a client that opens a new connection per request (so
// Go's transport does not silently retry a dropped reused connection).
func fetch(t *testing.T, u string, header http.Header) (status int, h http.Header, body []byte, err error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	req, rerr := http.NewRequest(http.MethodGet, u, nil)
	if rerr != nil {
		t.Fatal(rerr)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

func TestFaultProxyPassThrough(t *testing.T) {
	s := newProxySetup(t)
	status, _, body, err := fetch(t, s.blobURL(), nil)
	if err != nil || status != http.StatusOK || !bytes.Equal(body, s.blob) {
		t.Fatalf("GET through proxy: got %d, %d bytes, %v; want 200 with the blob", status, len(body), err)
	}
	status, _, body, err = fetch(t, s.blobURL(), http.Header{"Range": {"bytes=10-19"}})
	if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, s.blob[10:20]) {
		t.Fatalf("ranged GET through proxy: got %d %q %v; want 206 with bytes 10-19", status, body, err)
	}
	st := s.proxy.Stats()
	if st.Requests != 2 || st.BlobBytesServed != int64(len(s.blob)+10) {
		t.Errorf("proxy stats: got %v, want 2 requests, %d blob bytes", st, len(s.blob)+10)
	}
	// Uploads work through the proxy: the registry's Location names it.
	if _, err := NewPusherFor(s.proxy.Host, nil).PushBytes(context.Background(), proxyRepo, []byte("via proxy")); err != nil {
		t.Errorf("push through proxy: %v", err)
	}
	for _, q := range s.reg.Requests() {
		if q.Method == http.MethodPut && !strings.Contains(q.Path, "/uploads/") {
			t.Errorf("registry saw PUT %s, want an upload path", q.Path)
		}
	}
}

func TestFaultProxyCutBody(t *testing.T) {
	tests := []struct {
		name    string
		program func(p *FaultProxy)
		// wantCut[i] is whether request i is cut (after 1000 bytes).
		wantCut []bool
	}{
		{"once", func(p *FaultProxy) { p.CutBody(1000, 1, BlobGETs) }, []bool{true, false, false}},
		{"next two", func(p *FaultProxy) { p.CutBody(1000, 2, nil) }, []bool{true, true, false}},
		{"every second", func(p *FaultProxy) { p.CutBodyEvery(1000, 2, BlobGETs) }, []bool{false, true, false, true}},
		{"other paths only", func(p *FaultProxy) { p.CutBody(1000, 0, ManifestRequests) }, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newProxySetup(t)
			tt.program(s.proxy)
			for i, cut := range tt.wantCut {
				status, _, body, err := fetch(t, s.blobURL(), nil)
				if status != http.StatusOK {
					t.Fatalf("request %d: got status %d, want 200", i, status)
				}
				if cut {
					if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 1000 || !bytes.Equal(body, s.blob[:1000]) {
						t.Errorf("request %d: got %d bytes, err %v; want the first 1000 bytes and an unexpected EOF", i, len(body), err)
					}
				} else if err != nil || !bytes.Equal(body, s.blob) {
					t.Errorf("request %d: got %d bytes, err %v; want the whole blob", i, len(body), err)
				}
			}
		})
	}
}

func TestFaultProxyStatus(t *testing.T) {
	for _, code := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			s := newProxySetup(t)
			h := s.proxy.FailStatus(code, "2", 2, BlobGETs)
			// A non-matching request is untouched and does not use up a turn.
			if status, _, _, _ := fetch(t, s.proxy.URL+"/v2/", nil); status != http.StatusOK {
				t.Errorf("GET /v2/: got %d, want 200", status)
			}
			for i := 0; i < 2; i++ {
				status, hdr, body, err := fetch(t, s.blobURL(), nil)
				if err != nil || status != code || hdr.Get("Retry-After") != "2" || !bytes.Contains(body, []byte("errors")) {
					t.Errorf("request %d: got %d Retry-After=%q body %q err %v; want %d with Retry-After 2", i, status, hdr.Get("Retry-After"), body, err, code)
				}
			}
			if status, _, body, err := fetch(t, s.blobURL(), nil); err != nil || status != http.StatusOK || !bytes.Equal(body, s.blob) {
				t.Errorf("third request: got %d, %v; want 200 with the blob", status, err)
			}
			if h.Hits() != 2 {
				t.Errorf("hits: got %d, want 2", h.Hits())
			}
			if got := s.reg.CountRequests(func(q Request) bool { return strings.Contains(q.Path, "/blobs/") && q.Method == http.MethodGet }); got != 1 {
				t.Errorf("blob GETs reaching the registry: got %d, want 1", got)
			}
		})
	}
}

func TestFaultProxyStallHeaders(t *testing.T) {
	s := newProxySetup(t)
	s.proxy.StallHeaders(300*time.Millisecond, 1, BlobGETs)
	start := time.Now()
	status, _, body, err := fetch(t, s.blobURL(), nil)
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
		t.Errorf("stalled request: took %v, want at least 300ms", elapsed)
	}
	if err != nil || status != http.StatusOK || !bytes.Equal(body, s.blob) {
		t.Errorf("stalled request: got %d, %v; want 200 with the blob", status, err)
	}
	// A client with a shorter timeout gives up.
	s.proxy.StallHeaders(2*time.Second, 1, BlobGETs)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if resp, err := c.Get(s.blobURL()); err == nil {
		resp.Body.Close()
		t.Error("GET with 100ms timeout during a 2s stall: got no error, want a timeout")
	}
}

func TestFaultProxyStallBody(t *testing.T) {
	s := newProxySetup(t)
	s.proxy.StallBody(1000, 400*time.Millisecond, 1, BlobGETs)
	start := time.Now()
	resp, err := http.Get(s.blobURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	firstAt := time.Since(start)
	rest, err := io.ReadAll(resp.Body)
	total := time.Since(start)
	if err != nil || !bytes.Equal(append(first, rest...), s.blob) {
		t.Fatalf("stalled body: got %d bytes, %v; want the whole blob", 1000+len(rest), err)
	}
	if firstAt > 300*time.Millisecond || total < 400*time.Millisecond {
		t.Errorf("stall: first 1000 bytes after %v, all after %v; want the first promptly and the rest after 400ms", firstAt, total)
	}
}

func TestFaultProxyDrops(t *testing.T) {
	t.Run("requests", func(t *testing.T) {
		s := newProxySetup(t)
		s.proxy.DropRequests(2, BlobGETs)
		for i, wantErr := range []bool{false, true, false, true} {
			_, _, body, err := fetch(t, s.blobURL(), nil)
			if (err != nil) != wantErr || (!wantErr && !bytes.Equal(body, s.blob)) {
				t.Errorf("request %d: got err %v, want error=%v", i, err, wantErr)
			}
		}
		if got := s.reg.Stats().ByMethod["GET"]; got != 2 {
			t.Errorf("registry GETs: got %d, want 2 (dropped requests never reach it)", got)
		}
	})
	t.Run("connections", func(t *testing.T) {
		s := newProxySetup(t)
		s.proxy.DropEveryConnection(3)
		for i, wantErr := range []bool{false, false, true, false, false, true} {
			_, _, _, err := fetch(t, s.blobURL(), nil)
			if (err != nil) != wantErr {
				t.Errorf("connection %d: got err %v, want error=%v", i, err, wantErr)
			}
		}
		if got := s.proxy.DroppedConnections(); got != 2 {
			t.Errorf("dropped connections: got %d, want 2", got)
		}
		s.proxy.Clear()
		for i := 0; i < 3; i++ {
			if _, _, _, err := fetch(t, s.blobURL(), nil); err != nil {
				t.Errorf("after Clear, request %d: %v", i, err)
			}
		}
	})
}

func TestFaultProxyIgnoreRange(t *testing.T) {
	s := newProxySetup(t)
	s.proxy.IgnoreRange(1, nil)
	rng := http.Header{"Range": {"bytes=100-199"}}
	status, _, body, err := fetch(t, s.blobURL(), rng)
	if err != nil || status != http.StatusOK || !bytes.Equal(body, s.blob) {
		t.Errorf("range ignored: got %d with %d bytes (%v), want 200 with the whole blob", status, len(body), err)
	}
	status, _, body, err = fetch(t, s.blobURL(), rng)
	if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, s.blob[100:200]) {
		t.Errorf("range honoured again: got %d with %d bytes (%v), want 206 with 100 bytes", status, len(body), err)
	}
}

func TestFaultProxyBlobRedirect(t *testing.T) {
	for _, hostname := range []string{"", "localhost"} {
		t.Run("host="+hostname, func(t *testing.T) {
			s := newProxySetup(t, WithHtpasswd("u", "p"))
			storageHost, err := s.proxy.EnableBlobRedirect(hostname)
			if err != nil {
				t.Fatal(err)
			}
			if storageHost == s.proxy.Host || !strings.HasSuffix(storageHost, ":"+strings.Split(storageHost, ":")[1]) {
				t.Fatalf("storage host: got %s, want another port than %s", storageHost, s.proxy.Host)
			}
			// Without credentials the registry's 401 comes through.
			if status, _, _, _ := fetch(t, s.blobURL(), nil); status != http.StatusUnauthorized {
				t.Errorf("anonymous blob GET: got %d, want 401", status)
			}
			auth := basicHeader("u", "p")
			noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest(http.MethodGet, s.blobURL(), nil)
			req.Header = auth.Clone()
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, "http://"+storageHost+"/") {
				t.Fatalf("blob GET: got %d Location %q, want 307 to %s", resp.StatusCode, loc, storageHost)
			}
			// A careful client drops Authorization for the other host.
			rng := http.Header{"Range": {"bytes=5-14"}}
			status, _, body, err := fetch(t, loc, rng)
			if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, s.blob[5:15]) {
				t.Errorf("storage GET: got %d %q %v, want 206 with bytes 5-14", status, body, err)
			}
			if got := s.proxy.StorageAuthorizationSeen(); got != 0 {
				t.Errorf("storage saw Authorization %d times, want 0", got)
			}
			// net/http follows the redirect itself and keeps Authorization
			// when only the port differs: the storage records it.
			status, _, body, err = fetch(t, s.blobURL(), auth)
			if err != nil || status != http.StatusOK || !bytes.Equal(body, s.blob) {
				t.Errorf("followed redirect: got %d, %d bytes, %v; want 200 with the blob", status, len(body), err)
			}
			wantSeen := 1
			if hostname == "localhost" {
				wantSeen = 0 // another host name: net/http drops it
			}
			if got := s.proxy.StorageAuthorizationSeen(); got != wantSeen {
				t.Errorf("storage saw Authorization %d times, want %d", got, wantSeen)
			}
			if got := s.proxy.StorageRequests(); got != 2 {
				t.Errorf("storage requests: got %d, want 2", got)
			}
			if status, _, _, _ := fetch(t, "http://"+storageHost+storagePrefix+"nosuchgrant/x", nil); status != http.StatusForbidden {
				t.Errorf("unknown grant: got %d, want 403", status)
			}
		})
	}
}

func TestFaultProxyTokenRealm(t *testing.T) {
	s := newProxySetup(t, WithTokenAuth("u", "p"))
	status, h, _, _ := fetch(t, s.proxy.URL+"/v2/", nil)
	if status != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), `realm="http://`+s.proxy.Host+TokenPath+`"`) {
		t.Fatalf("challenge through proxy: got %d %q, want 401 naming the proxy's realm", status, h.Get("WWW-Authenticate"))
	}
	status, h, _, _ = fetch(t, s.reg.URL+"/v2/", nil)
	if !strings.Contains(h.Get("WWW-Authenticate"), `realm="`+s.reg.Token.Realm+`"`) {
		t.Errorf("direct challenge: got %d %q, want realm %s", status, h.Get("WWW-Authenticate"), s.reg.Token.Realm)
	}
	// The whole flow through the proxy, with go-containerregistry's auth.
	if _, err := NewPusherFor(s.proxy.Host, &Credentials{User: "u", Password: "p"}).PushBytes(context.Background(), proxyRepo, []byte("x")); err != nil {
		t.Errorf("push through proxy with token auth: %v", err)
	}
}

func TestFaultProxyConcurrentFaults(t *testing.T) {
	s := newProxySetup(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				status, _, body, err := fetch(t, s.blobURL(), http.Header{"Range": {"bytes=0-99"}})
				if err == nil && status == http.StatusPartialContent && !bytes.Equal(body, s.blob[:100]) {
					t.Errorf("got wrong bytes")
				}
			}
		})
	}
	for i := 0; i < 20; i++ {
		h := s.proxy.CutBody(10, 1, BlobGETs)
		s.proxy.FailStatus(503, "", 1, nil)
		h.Remove()
		_ = s.proxy.Stats()
	}
	s.proxy.Clear()
	wg.Wait()
}
