package registry

import (
	"net/url"
	"strconv"
	"sync"
	"time"
)

const (
	// locationTTL bounds how long a storage URL is used without asking the
	// registry again, whatever its own expiry says.
	locationTTL = 5 * time.Minute
	// locationMargin is kept before a URL's own expiry: a request started
	// just before it may reach the storage just after.
	locationMargin = 30 * time.Second
	// maxLocations bounds the map; beyond it the expired go, then any.
	maxLocations = 4096
)

// blobLocations remembers, per blob URL at the registry, the signed storage
// URL a redirect led to, until that URL expires (locationExpiry).
// redirectMemory is its user. Safe for concurrent use.
type blobLocations struct {
	mu sync.Mutex
	m  map[string]blobLocation // by the blob's URL at the registry
}

type blobLocation struct {
	url   string
	until time.Time
}

// get returns the storage URL remembered for blob, or "".
func (l *blobLocations) get(blob string, now time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	loc, ok := l.m[blob]
	if !ok {
		return ""
	}
	if !now.Before(loc.until) {
		delete(l.m, blob)
		return ""
	}
	return loc.url
}

// put remembers that blob was served from storage URL u.
func (l *blobLocations) put(blob string, u *url.URL, now time.Time) {
	until := locationExpiry(u, now)
	if !now.Before(until) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]blobLocation{}
	}
	if len(l.m) >= maxLocations {
		for k, v := range l.m {
			if !now.Before(v.until) {
				delete(l.m, k)
			}
		}
		for k := range l.m {
			if len(l.m) < maxLocations {
				break
			}
			delete(l.m, k)
		}
	}
	l.m[blob] = blobLocation{url: u.String(), until: until}
}

// forget drops blob's storage URL if it is still u.
func (l *blobLocations) forget(blob, u string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[blob].url == u {
		delete(l.m, blob)
	}
}

// locationExpiry is when a storage URL should no longer be used: the
// expiry its signature names, less a margin, and at most locationTTL from
// now. It reads the signed-URL forms of S3 (X-Amz-Date + X-Amz-Expires),
// CloudFront and GCS v2 (Expires, Unix seconds), GCS v4 (X-Goog-Date +
// X-Goog-Expires) and Azure SAS (se, RFC 3339).
func locationExpiry(u *url.URL, now time.Time) time.Time {
	until := now.Add(locationTTL)
	q := u.Query()
	signed := func(date, expires string) (time.Time, bool) {
		d, err1 := time.Parse("20060102T150405Z", q.Get(date))
		s, err2 := strconv.ParseInt(q.Get(expires), 10, 64)
		if err1 != nil || err2 != nil {
			return time.Time{}, false
		}
		return d.Add(time.Duration(s) * time.Second), true
	}
	var exp []time.Time
	if t, ok := signed("X-Amz-Date", "X-Amz-Expires"); ok {
		exp = append(exp, t)
	}
	if t, ok := signed("X-Goog-Date", "X-Goog-Expires"); ok {
		exp = append(exp, t)
	}
	if s, err := strconv.ParseInt(q.Get("Expires"), 10, 64); err == nil {
		exp = append(exp, time.Unix(s, 0))
	}
	if t, err := time.Parse(time.RFC3339, q.Get("se")); err == nil {
		exp = append(exp, t)
	}
	for _, t := range exp {
		if t := t.Add(-locationMargin); t.Before(until) {
			until = t
		}
	}
	return until
}
