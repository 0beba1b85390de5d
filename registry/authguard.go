package registry

import "net/http"

// authGuard drops the Authorization header from a redirected request that
// leaves the scheme and host:port of the request that started the chain,
// so the registry's credentials never reach a storage host. Go's own rule
// would keep the header for the same hostname on any port and for
// subdomains.
type authGuard struct {
	next http.RoundTripper
}

func (g *authGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" && req.Response != nil {
		first := req
		for first.Response != nil && first.Response.Request != nil {
			first = first.Response.Request
		}
		if !sameOrigin(first, req) {
			req = req.Clone(req.Context())
			req.Header.Del("Authorization")
		}
	}
	return g.next.RoundTrip(req)
}

// sameOrigin reports whether a and b go to the same scheme and host:port.
func sameOrigin(a, b *http.Request) bool {
	return a.URL.Scheme == b.URL.Scheme && a.URL.Host == b.URL.Host
}
