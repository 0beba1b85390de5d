package registry

import (
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// v1Options configure the v1 client; New (client.go) fills them from
// Options. Every zero field means the default it names.
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
	// RetryAfterMax is the longest Retry-After the client waits for; a
	// server asking for longer ends the retries with its error. Zero: 30 s.
	RetryAfterMax time.Duration
	// UserAgent is sent with every request; empty means "regfs".
	UserAgent string
	// RequestTimeout bounds the wait for response headers and for the next
	// body bytes while reading; a stalled request counts as a failed attempt
	// (next endpoint, or a resume). Zero means 60 s; negative: none.
	RequestTimeout time.Duration
	// MaxResumes bounds the consecutive reconnects of one layer stream that
	// bring no new byte. Zero means 8.
	MaxResumes int
	// MaxRangeSkip is how far into a layer the client reads and discards
	// bytes when the endpoint ignores Range; further in fails with
	// ErrRangeUnsupported. Zero means 16 MiB; negative: never skip.
	MaxRangeSkip int64
	// Logger receives retries, fail-overs and resumes (debug). Nil:
	// logrus's standard logger.
	Logger *logrus.Entry
}

func (o v1Options) withDefaults() v1Options {
	if o.MaxRetries == 0 {
		o.MaxRetries = 4
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 100 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Second
	}
	o.RetryMax = max(o.RetryMax, o.RetryBase)
	if o.RetryAfterMax <= 0 {
		o.RetryAfterMax = 30 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "regfs"
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 60 * time.Second
	}
	if o.MaxResumes <= 0 {
		o.MaxResumes = 8
	}
	if o.MaxRangeSkip == 0 {
		o.MaxRangeSkip = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	return o
}
