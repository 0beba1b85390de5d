package registry

import (
	"net/http"
	"net/url"
	"time"

	"github.com/sirupsen/logrus"
)

// redirectMemory sends a blob GET straight to the storage URL a redirect
// led it to before, while that URL is valid (blobLocations), and learns
// the storage URL of each GET that a redirect answered. A storage URL that
// fails or answers anything but the blob (expired, revoked) is forgotten
// and the request sent as asked. Only for content-addressed URLs: what is
// behind them never changes.
type redirectMemory struct {
	next      http.RoundTripper
	locations *blobLocations
	log       *logrus.Entry
}

func (m *redirectMemory) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	key := req.URL.String()
	what := req.Method + " " + redactURL(req.URL)
	if loc := m.locations.get(key, time.Now()); loc != "" {
		u, err := url.Parse(loc)
		var resp *http.Response
		if err == nil {
			resp, err = m.next.RoundTrip(redirected(req, u))
		}
		if err == nil && servesBlob(resp) {
			return resp, nil
		}
		if err == nil {
			m.log.Debugf("%s: storage answered %s: asking the registry again", what, resp.Status)
			drain(resp)
		} else if ctx.Err() != nil {
			return nil, err
		} else {
			m.log.WithError(err).Debugf("%s: storage failed: asking the registry again", what)
		}
		m.locations.forget(key, loc)
	}
	resp, err := m.next.RoundTrip(req)
	if err == nil && servesBlob(resp) && resp.Request != nil && resp.Request.Response != nil &&
		resp.Request.URL != nil && resp.Request.URL.String() != key {
		m.locations.put(key, resp.Request.URL, time.Now())
	}
	return resp, err
}

// redirected is req sent to u as a redirect would send it: without
// Authorization when u is another scheme or host:port.
func redirected(req *http.Request, u *url.URL) *http.Request {
	r := req.Clone(req.Context())
	r.URL, r.Host = u, u.Host
	if !sameOrigin(req, r) {
		r.Header.Del("Authorization")
	}
	return r
}

func servesBlob(resp *http.Response) bool {
	return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent
}
