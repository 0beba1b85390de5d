package registry

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

func TestLocationExpiry(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, url string
		want      time.Time
	}{
		{"unsigned: the TTL", "https://storage.example/blob", now.Add(locationTTL)},
		{"S3, 60 s left", "https://s3.example/b?X-Amz-Date=20261126T115900Z&X-Amz-Expires=120&X-Amz-Signature=x", now.Add(60*time.Second - locationMargin)},
		{"S3, an hour left: the TTL", "https://s3.example/b?X-Amz-Date=20261126T120000Z&X-Amz-Expires=3600", now.Add(locationTTL)},
		{"S3, expired", "https://s3.example/b?X-Amz-Date=20261126T100000Z&X-Amz-Expires=600", time.Date(2026, 11, 26, 10, 10, 0, 0, time.UTC).Add(-locationMargin)},
		{"GCS v4", "https://gcs.example/b?X-Goog-Date=20261126T120000Z&X-Goog-Expires=120", now.Add(120*time.Second - locationMargin)},
		{"CloudFront / GCS v2 Expires", "https://cdn.example/b?Expires=" + strconv.FormatInt(now.Unix()+90, 10) + "&Signature=x", now.Add(90*time.Second - locationMargin)},
		{"Azure SAS", "https://blob.example/b?se=2026-11-26T12%3A02%3A00Z&sig=x", now.Add(2*time.Minute - locationMargin)},
		{"garbage in the query: the TTL", "https://s3.example/b?X-Amz-Date=yesterday&X-Amz-Expires=many&Expires=soon&se=later", now.Add(locationTTL)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if got := locationExpiry(u, now); !got.Equal(tt.want) {
				t.Errorf("locationExpiry(%s): got %v want %v", tt.url, got, tt.want)
			}
		})
	}
}

func TestBlobLocationsBounded(t *testing.T) {
	var l blobLocations
	now := time.Now()
	u, _ := url.Parse("https://storage.example/x")
	for i := 0; i < maxLocations+50; i++ {
		l.put("blob"+string(rune('a'+i%26))+strings.Repeat("x", i/26), u, now)
	}
	if n := len(l.m); n > maxLocations {
		t.Errorf("locations kept: got %d want at most %d", n, maxLocations)
	}
	expired, _ := url.Parse("https://s3.example/b?X-Amz-Date=20000101T000000Z&X-Amz-Expires=60")
	l.put("old", expired, now)
	if got := l.get("old", now); got != "" {
		t.Errorf("an expired URL was kept: %q", got)
	}
	l.put("b", u, now)
	if got := l.get("b", now.Add(locationTTL)); got != "" {
		t.Errorf("a URL past its TTL: got %q want none", got)
	}
}

// A blob's second range goes straight to the storage URL the registry
// redirected the first to; once that URL is refused (expired), the
// registry is asked again and the bytes are still right.
func TestBlobRedirectRemembered(t *testing.T) {
	reg, fx := smallRegistry(t, registrytest.WithTokenAuth("bob", "pw"))
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	if _, err := proxy.EnableBlobRedirect("localhost"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := newClient(t, proxy.Host, withAuth(testOptions(), "bob", "pw"))
	img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", Platform{})
	if err != nil {
		t.Fatal(err)
	}
	l := img.Layers[0]
	for _, fl := range fx.Small.Layers {
		if fl.Digest == l.Digest && fl.Size < 300 {
			t.Fatalf("layer %s too small for three ranges", l.Digest)
		}
	}
	want := fx.Small.Layers[0].Blob
	b, err := c.OpenBlob(ctx, registrytest.RepoSmall, l)
	if err != nil {
		t.Fatal(err)
	}
	registryGETs := func() int {
		n := 0
		for _, q := range proxy.Requests() {
			if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+l.Digest.String()) {
				n++
			}
		}
		return n
	}
	read := func(off int64) {
		t.Helper()
		p := make([]byte, 100)
		if _, err := b.ReadAt(ctx, p, off); err != nil {
			t.Fatalf("ReadAt(100 at %d): %v", off, err)
		}
		if !bytes.Equal(p, want[off:off+100]) {
			t.Fatalf("ReadAt(100 at %d): bytes differ from the blob", off)
		}
	}
	steps := []struct {
		name              string
		before            func()
		off               int64
		registry, storage int // requests each gets for this read
	}{
		{"first range: registry, then storage", nil, 0, 1, 1},
		{"second range: storage only", nil, 100, 0, 1},
		{"storage URL revoked: refused, registry, new URL", proxy.RevokeStorageGrants, 200, 1, 2},
		{"then storage only again", nil, 50, 0, 1},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		r0, s0 := registryGETs(), proxy.StorageRequests()
		read(s.off)
		if r, st := registryGETs()-r0, proxy.StorageRequests()-s0; r != s.registry || st != s.storage {
			t.Errorf("%s: got %d registry GETs and %d storage requests, want %d and %d", s.name, r, st, s.registry, s.storage)
		}
	}
	if n := proxy.StorageAuthorizationSeen(); n != 0 {
		t.Errorf("the storage host got an Authorization header %d times, want 0", n)
	}
}
