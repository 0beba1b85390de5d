package registrytest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Lie is how an EvilRegistry lies about the blobs it targets (the attack
// cases of a registry that must not be trusted; issue 10).
type Lie int

const (
	// LieWrongBytes answers full GETs and ranges alike with other bytes
	// of the blob's size (Mangle of the honest ones).
	LieWrongBytes Lie = iota + 1
	// LieOnRanges answers ranges with other bytes; full GETs are honest.
	LieOnRanges
	// LieOnFullGET answers full GETs with other bytes; ranges are honest.
	LieOnFullGET
	// LieContentRange answers a range with the right Content-Range header
	// but the bytes of another offset (one byte further on, or back).
	LieContentRange
	// LieShortBody answers a range with fewer bytes than asked, declared
	// honestly by Content-Length, and a full GET with half the blob.
	LieShortBody
	// LieManifestDigest answers a manifest asked for by digest with bytes
	// that do not hash to it (a trailing newline added).
	LieManifestDigest
)

func (l Lie) String() string {
	switch l {
	case LieWrongBytes:
		return "wrong bytes"
	case LieOnRanges:
		return "wrong bytes on ranges"
	case LieOnFullGET:
		return "wrong bytes on full GETs"
	case LieContentRange:
		return "lying Content-Range"
	case LieShortBody:
		return "short bodies"
	case LieManifestDigest:
		return "manifest digest mismatch"
	}
	return "Lie(" + strconv.Itoa(int(l)) + ")"
}

// Mangle is the wrong bytes an EvilRegistry serves for a blob: every byte
// inverted, so every block differs and the size is the same.
func Mangle(honest []byte) []byte {
	out := make([]byte, len(honest))
	for i, b := range honest {
		out[i] = ^b
	}
	return out
}

// EvilRegistry is a registry of its own host that serves what an upstream
// Registry holds, lying as Lie says about the blobs in Targets (nil: every
// blob) and about manifests. Requests it does not lie about are proxied.
type EvilRegistry struct {
	// Host is "127.0.0.1:port", another host than the upstream's.
	Host string
	Lie  Lie

	upstream *url.URL
	targets  map[digest.Digest]bool
	proxy    *httputil.ReverseProxy
	srv      *httptest.Server

	mu    sync.Mutex
	blobs map[string][]byte // honest bytes by blob path
	lies  int
}

// StartEvilRegistry serves up (the Registry the test pushed to) on a new
// host, lying about targets (none given: every blob); it stops in
// t.Cleanup.
func StartEvilRegistry(t testing.TB, up *Registry, lie Lie, targets ...digest.Digest) *EvilRegistry {
	t.Helper()
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	e := &EvilRegistry{Lie: lie, upstream: u, proxy: httputil.NewSingleHostReverseProxy(u), blobs: map[string][]byte{}}
	if len(targets) > 0 {
		e.targets = map[digest.Digest]bool{}
		for _, d := range targets {
			e.targets[d] = true
		}
	}
	e.srv = httptest.NewServer(e)
	t.Cleanup(e.srv.Close)
	e.Host = strings.TrimPrefix(e.srv.URL, "http://")
	return e
}

// Lies is the number of answers it lied in.
func (e *EvilRegistry) Lies() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lies
}

// ServeHTTP lies where it was told to and proxies the rest.
func (e *EvilRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && e.Lie == LieManifestDigest && strings.Contains(path, "/manifests/sha256:"):
		e.serveManifest(w, r)
	case r.Method == http.MethodGet && e.Lie != LieManifestDigest && blobPathRE.MatchString(path) && e.targeted(path):
		e.serveBlob(w, r)
	default:
		e.proxy.ServeHTTP(w, r)
	}
}

func (e *EvilRegistry) targeted(path string) bool {
	if e.targets == nil {
		return true
	}
	d, err := digest.Parse(path[strings.LastIndexByte(path, '/')+1:])
	return err == nil && e.targets[d]
}

// honest fetches (once) the upstream's bytes of the blob or manifest at path.
func (e *EvilRegistry) honest(r *http.Request) ([]byte, http.Header, error) {
	u := *e.upstream
	u.Path = r.URL.Path
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", strings.Join(r.Header.Values("Accept"), ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("upstream %s: %s", u.Path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return b, resp.Header, err
}

func (e *EvilRegistry) lied() {
	e.mu.Lock()
	e.lies++
	e.mu.Unlock()
}

func (e *EvilRegistry) serveManifest(w http.ResponseWriter, r *http.Request) {
	b, h, err := e.honest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	e.lied()
	b = append(b, '\n')
	w.Header().Set("Content-Type", h.Get("Content-Type"))
	w.Header().Set("Docker-Content-Digest", h.Get("Docker-Content-Digest"))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (e *EvilRegistry) serveBlob(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	data, ok := e.blobs[r.URL.Path]
	e.mu.Unlock()
	if !ok {
		var err error
		if data, _, err = e.honest(r); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		e.mu.Lock()
		e.blobs[r.URL.Path] = data
		e.mu.Unlock()
	}
	rng := r.Header.Get("Range")
	a, z, ranged := parseRange(rng, int64(len(data)))
	if rng != "" && !ranged {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return
	}
	body := data
	switch e.Lie {
	case LieWrongBytes:
		body = Mangle(data)
	case LieOnRanges:
		if ranged {
			body = Mangle(data)
		}
	case LieOnFullGET:
		if !ranged {
			body = Mangle(data)
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	if !ranged {
		if e.Lie == LieShortBody {
			e.lied()
			body = body[:len(body)/2]
		} else if e.Lie != LieContentRange {
			e.lied()
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		return
	}
	part := body[a : z+1]
	switch e.Lie {
	case LieContentRange:
		shift := int64(1)
		if z+1 >= int64(len(data)) {
			shift = -1
		}
		if a+shift >= 0 {
			part = data[a+shift : z+1+shift]
		}
	case LieShortBody:
		part = part[:len(part)/2]
	}
	if e.Lie != LieOnFullGET {
		e.lied()
	}
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, z, len(data)))
	w.Header().Set("Content-Length", strconv.Itoa(len(part)))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(part)
}

// parseRange parses "bytes=a-b" or "bytes=a-" within size; ok is false
// for no or an unsatisfiable range.
func parseRange(h string, size int64) (a, z int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	as, zs, _ := strings.Cut(spec, "-")
	a, err := strconv.ParseInt(as, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false
	}
	z = size - 1
	if zs != "" {
		if z, err = strconv.ParseInt(zs, 10, 64); err != nil || z < a {
			return 0, 0, false
		}
		z = min(z, size-1)
	}
	return a, z, true
}

var _ http.Handler = (*EvilRegistry)(nil)
