package registry

// Every request of both APIs takes one pipeline of http.RoundTrippers,
// outermost first:
//
//	redirectMemory  blob GETs only: straight to the storage URL a redirect
//	                gave before, while it is valid (redirectmemory.go)
//	retryTransport  connection errors, stalls, 5xx, 408, 429 (Retry-After),
//	                capped back-off; v1 fails over across endpoints (retry.go)
//	exchange        an http.Client: follows redirects, keeps v1's cookies
//	ggcr auth       v2 only, one per scope: Basic, or Bearer tokens fetched
//	                and refreshed on 401; v1 sets its own Authorization
//	user agent      go-containerregistry's, "<UserAgent> go-containerregistry/<v>"
//	authGuard       Authorization never follows a redirect to another
//	                host:port (authguard.go)
//	stallTransport  per request: headers and every pause between body bytes
//	                within RequestTimeout (stall.go)
//	schemeGuard     plain HTTP only where the policy allows it (scheme.go)
//	base            Options.Transport or a clone of http.DefaultTransport
//
// Layers above exchange see a whole exchange (a retry asks the registry
// again and follows its redirect again); layers below it see each hop.

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// hopTransport is the part of the pipeline under the exchange, shared by
// ggcr's auth transports (ping and token requests included) and v1.
func hopTransport(base http.RoundTripper, host, scheme string, opts Options) http.RoundTripper {
	var rt http.RoundTripper = &schemeGuard{host: host, scheme: scheme, next: base}
	rt = &stallTransport{next: rt, timeout: opts.RequestTimeout}
	rt = &authGuard{next: rt}
	// ggcr's user-agent transport sets "<ours> go-containerregistry/<v>";
	// ggcr does not wrap it again.
	return transport.NewUserAgent(rt, opts.UserAgent)
}

// baseTransport is Options.Transport, or a clone of the default transport
// with room for the parallel ranged reads layercache makes.
func baseTransport(opts Options) http.RoundTripper {
	if opts.Transport != nil {
		return opts.Transport
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	if opts.InsecureSkipTLSVerify {
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{}
		}
		t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the caller asked for it
	}
	return t
}

// exchange sends a request through the http.Client that client returns
// for it, following redirects. Setting up the client (v2: ping and first
// token of a scope) counts as part of the attempt, so the retry layer
// above retries a setup that failed for a temporary reason.
type exchange struct {
	client func(ctx context.Context) (*http.Client, error)
}

func (e *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	hc, err := e.client(req.Context())
	if err != nil {
		return nil, err
	}
	return hc.Do(req)
}

// fixedClient is an exchange.client that always answers hc.
func fixedClient(hc *http.Client) func(context.Context) (*http.Client, error) {
	return func(context.Context) (*http.Client, error) { return hc, nil }
}

// send builds a bodyless request for method url with hdr under ctx and
// sends it through rt.
func send(ctx context.Context, rt http.RoundTripper, method, url string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = append([]string(nil), vs...)
	}
	return rt.RoundTrip(req)
}

// drain reads a little of a body we do not need, so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
