package registry

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// schemeGuard keeps requests to the registry host on the scheme the policy
// chose. go-containerregistry's ping would otherwise try https and http
// for hosts it guesses are local (including RFC 1918 addresses), where
// docker's rule is: plain HTTP for loopback only.
type schemeGuard struct {
	host, scheme string
	next         http.RoundTripper
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == g.host && req.URL.Scheme != g.scheme {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &schemeError{host: g.host, scheme: req.URL.Scheme, want: g.scheme}
	}
	return g.next.RoundTrip(req)
}

// schemeError is a request to the registry host with the scheme the
// client's policy forbids.
type schemeError struct{ host, scheme, want string }

func (e *schemeError) Error() string {
	return fmt.Sprintf("refusing %s:// to %s: this client speaks %s:// to it (see Options.PlainHTTP)", e.scheme, e.host, e.want)
}

// schemeFor is the scheme the client speaks to host: http for loopback
// hosts or when plainHTTP is set, https otherwise.
func schemeFor(host string, plainHTTP bool) string {
	if plainHTTP || isLoopbackHost(host) {
		return "http"
	}
	return "https"
}

// isLoopbackHost reports whether host[:port] names this machine, the hosts
// docker talks plain HTTP to.
func isLoopbackHost(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
