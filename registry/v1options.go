package registry

// Stand-ins the v1 client uses until the shared pieces of the v2 client land
// (errors.go sentinels, client.go Options). Only this file changes when they
// do: the v1 code refers to these names alone.

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
)

var (
	// v1ErrNotFound becomes ErrNotFound once errors.go lands.
	v1ErrNotFound = errors.New("not found")
	// v1ErrUnauthorized becomes ErrUnauthorized once errors.go lands.
	v1ErrUnauthorized = errors.New("unauthorized")
	// v1ErrRangeUnsupported becomes ErrRangeUnsupported once errors.go lands.
	v1ErrRangeUnsupported = errors.New("server does not support range requests")
)

// v1Options is the subset of the client options the v1 client needs.
type v1Options struct {
	// Username and Password are sent as Basic credentials to the index (and
	// to endpoints that hand out no token). Empty: anonymous.
	Username, Password string
	// PlainHTTP forces http:// for a non-loopback host; loopback hosts always
	// use plain HTTP, as docker does.
	PlainHTTP bool
	// Transport is the base round tripper; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// MaxRetries bounds the rounds over all endpoints for one request after
	// the first; 0 means 4. Negative: no retries.
	MaxRetries int
	// RetryBase is the first back-off; it doubles up to RetryMax. Zero means
	// 100 ms and 5 s.
	RetryBase, RetryMax time.Duration
	// UserAgent is sent with every request; empty means "regfs".
	UserAgent string
	// RequestTimeout bounds the wait for response headers and any pause
	// between body bytes; a stalled request counts as a failed attempt (next
	// endpoint, or a resume). Zero means 60 s; negative: none.
	RequestTimeout time.Duration
	// MaxResumes bounds the consecutive reconnects of one layer stream that
	// bring no new byte. Zero means 8.
	MaxResumes int
	// MaxRangeSkip is how far into a layer the client reads and discards
	// bytes when the endpoint ignores Range; further in fails with
	// v1ErrRangeUnsupported. Zero means 16 MiB; negative: never skip.
	MaxRangeSkip int64
}

// v1IsLoopback reports whether host[:port] names this machine.
func v1IsLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
