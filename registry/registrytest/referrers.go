package registrytest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ReferrersFront is a small OCI 1.1 referrers API in front of a registry
// that has none (the reference registry v3.1.2): it passes every request
// through, notes the subject of each manifest PUT and answers it with the
// OCI-Subject header, and serves GET /v2/<name>/referrers/<digest> (with
// ?artifactType= filtering) from what it noted. Only what was pushed
// through the front is known.
type ReferrersFront struct {
	// Host is "127.0.0.1:port" of the front.
	Host string
	// Lookups counts referrers API requests answered.
	Lookups atomic.Int64

	mu   sync.Mutex
	refs map[string][]ocispec.Descriptor // "<repo>@<subject>" → referrers
}

// StartReferrersFront starts a front for reg, closed in t.Cleanup.
func StartReferrersFront(t testing.TB, reg *Registry) *ReferrersFront {
	t.Helper()
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &ReferrersFront{refs: map[string][]ocispec.Descriptor{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if repo, subject, ok := f.referrersPath(r.URL.Path); ok && r.Method == http.MethodGet {
			f.serveReferrers(w, repo, subject, r.URL.Query().Get("artifactType"))
			return
		}
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			f.putManifest(w, r, proxy)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.Host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

// referrersPath splits /v2/<name>/referrers/<digest>.
func (f *ReferrersFront) referrersPath(p string) (repo string, subject digest.Digest, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/referrers/")
	if i < 0 {
		return "", "", false
	}
	d, err := digest.Parse(rest[i+len("/referrers/"):])
	if err != nil {
		return "", "", false
	}
	return rest[:i], d, true
}

func (f *ReferrersFront) serveReferrers(w http.ResponseWriter, repo string, subject digest.Digest, artifactType string) {
	f.Lookups.Add(1)
	f.mu.Lock()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	for _, d := range f.refs[repo+"@"+subject.String()] {
		if artifactType == "" || d.ArtifactType == artifactType {
			idx.Manifests = append(idx.Manifests, d)
		}
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	_ = json.NewEncoder(w).Encode(idx)
}

// putManifest passes a manifest PUT through and, when the registry took a
// manifest with a subject, notes it and answers OCI-Subject.
func (f *ReferrersFront) putManifest(w http.ResponseWriter, r *http.Request, proxy *httputil.ReverseProxy) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var m ocispec.Manifest
	if json.Unmarshal(body, &m) != nil || m.Subject == nil {
		proxy.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, r)
	if rec.Code == http.StatusCreated {
		repo := strings.TrimPrefix(r.URL.Path[:strings.LastIndex(r.URL.Path, "/manifests/")], "/v2/")
		desc := ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: m.ArtifactType, Digest: digest.FromBytes(body),
			Size: int64(len(body)), Annotations: m.Annotations}
		if desc.ArtifactType == "" {
			desc.ArtifactType = m.Config.MediaType
		}
		f.mu.Lock()
		key := repo + "@" + m.Subject.Digest.String()
		if !slices.ContainsFunc(f.refs[key], func(d ocispec.Descriptor) bool { return d.Digest == desc.Digest }) {
			f.refs[key] = append(f.refs[key], desc)
		}
		f.mu.Unlock()
		rec.Header().Set("OCI-Subject", m.Subject.Digest.String())
	}
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}
