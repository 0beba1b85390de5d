package registry

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sirupsen/logrus"
)

// Options configure New. The zero value is what most callers want; every
// field says its default. Options hold no context: each call takes its own.
type Options struct {
	// API selects the protocol: APIAuto (also ""), APIV2 or APIV1.
	// Default APIAuto: New probes GET /v2/ and falls back to v1 when the
	// host answers 404 there.
	API string

	// PlainHTTP makes the client speak http:// to the registry. Default
	// false: plain HTTP only for loopback hosts (127.0.0.0/8, ::1,
	// localhost), as docker does; every other host uses TLS.
	PlainHTTP bool
	// InsecureSkipTLSVerify accepts any TLS certificate. Default false:
	// certificates are verified against the system roots. Ignored when
	// Transport is set (configure TLS there).
	InsecureSkipTLSVerify bool

	// Keychain finds credentials for the registry. Default
	// authn.DefaultKeychain: $DOCKER_CONFIG/config.json or
	// ~/.docker/config.json, including credential helpers.
	Keychain authn.Keychain
	// Authenticator, when set, is used instead of Keychain (for a --user
	// flag, or tests). Default nil.
	Authenticator authn.Authenticator

	// MaxRetries is how many times one request is retried after the first
	// attempt, for connection errors, 5xx, 408 and 429. Default 0 means 4;
	// negative means never retry.
	MaxRetries int
	// RetryBackoffMin is the first pause between attempts; it doubles up
	// to RetryBackoffMax. Defaults 100 ms and 5 s.
	RetryBackoffMin, RetryBackoffMax time.Duration
	// RetryAfterMax is the longest Retry-After the client waits for; a
	// server asking for longer ends the retries with its error at once.
	// Default 30 s.
	RetryAfterMax time.Duration
	// RequestTimeout bounds the wait for response headers and any pause
	// between response body bytes (a stalled body is resumed). It does not
	// bound a long transfer that keeps moving. Default 60 s; negative: none.
	RequestTimeout time.Duration
	// MaxResumes bounds the consecutive reconnects of one blob stream that
	// bring no new byte. Default 8.
	MaxResumes int
	// UnverifiedStreams leaves whole-blob streams (Source.Open of a whole
	// blob) unhashed, for a consumer that hashes what it reads against
	// blobio.Origin's digest itself (the block cache does), so each byte
	// is hashed once. Default false: such a stream of wrong bytes ends with
	// ErrDigestMismatch.
	UnverifiedStreams bool
	// PageSize is the n asked for per catalog and tag list page. Default
	// 1000 (distribution's default maximum).
	PageSize int

	// Content, when set, answers manifests and configs by digest before the
	// registry is asked, and keeps every manifest, index and config the v2
	// client fetches (only bytes that hash to their digest). Default nil:
	// every Resolve asks the registry. The v1 API has no digests and does
	// not use it.
	Content ContentStore

	// UserAgent is sent with every request, followed by
	// go-containerregistry's own. Default "regfs".
	UserAgent string
	// Logger receives retries and resumes (debug) and fallbacks (info).
	// Default: logrus's standard logger.
	Logger *logrus.Entry
	// Transport is the base round tripper, under auth and retries; for
	// tests and custom dialing. Default: a clone of http.DefaultTransport.
	Transport http.RoundTripper
}

// withDefaults fills zero fields.
func (o Options) withDefaults() Options {
	if o.API == "" {
		o.API = APIAuto
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 4
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.RetryBackoffMin <= 0 {
		o.RetryBackoffMin = 100 * time.Millisecond
	}
	if o.RetryBackoffMax <= 0 {
		o.RetryBackoffMax = 5 * time.Second
	}
	if o.RetryBackoffMax < o.RetryBackoffMin {
		o.RetryBackoffMax = o.RetryBackoffMin
	}
	if o.RetryAfterMax <= 0 {
		o.RetryAfterMax = 30 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 60 * time.Second
	}
	if o.MaxResumes <= 0 {
		o.MaxResumes = 8
	}
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
	if o.UserAgent == "" {
		o.UserAgent = "regfs"
	}
	if o.Logger == nil {
		o.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	return o
}

// New returns a client for the registry at host ("host[:port]", no scheme).
// With API auto it probes GET /v2/ under ctx (with retries) and falls back
// to the v1 API when the host has no v2 endpoint; with APIV2 or APIV1 it
// does no I/O beyond resolving credentials.
func New(ctx context.Context, host string, opts Options) (Client, error) {
	if err := checkRegistryHost(host); err != nil {
		return nil, fmt.Errorf("registry host %q: %w", host, err)
	}
	opts = opts.withDefaults()
	switch opts.API {
	case APIAuto, APIV2, APIV1:
	default:
		return nil, fmt.Errorf("registry %s: unknown API %q: want %q, %q or %q", host, opts.API, APIAuto, APIV2, APIV1)
	}
	c, err := newV2Client(ctx, host, opts)
	if err != nil {
		return nil, err
	}
	switch opts.API {
	case APIV2:
		return c, nil
	case APIV1:
		return c.makeV1(ctx)
	}
	isV2, err := c.probe(ctx)
	if err != nil {
		return nil, err
	}
	if isV2 {
		return c, nil
	}
	c.log.Infof("registry %s has no /v2/ endpoint: using the v1 API", host)
	v1, err := c.makeV1(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := v1.Ping(ctx); err != nil {
		return nil, fmt.Errorf("registry %s: no v2 API (GET /v2/ answered 404) and the v1 ping failed: %w", host, err)
	}
	return v1, nil
}

// makeV1 builds the v1 client from the same options, transport and
// credentials.
func (c *v2Client) makeV1(ctx context.Context) (*v1Client, error) {
	cfg, err := authn.Authorization(ctx, c.auth)
	if err != nil {
		return nil, fmt.Errorf("registry %s: credentials: %w", c.host, err)
	}
	opts := c.opts
	opts.PlainHTTP = c.scheme == "http"
	opts.Transport = c.base
	v1, err := newV1Client(c.host, opts, cfg.Username, cfg.Password)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", c.host, err)
	}
	return v1, nil
}

// apiHost is the host the HTTP requests go to: Docker Hub's API lives on
// registry-1.docker.io.
func apiHost(host string) string {
	if host == DockerHub || host == "index.docker.io" {
		return "registry-1.docker.io"
	}
	return host
}

// newV2Client builds a v2 client; it does no I/O except resolving
// credentials (a credential helper may run).
func newV2Client(ctx context.Context, host string, opts Options) (*v2Client, error) {
	api := apiHost(host)
	scheme := schemeFor(api, opts.PlainHTTP)
	var nameOpts []name.Option
	if scheme == "http" {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(api, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry host %q: %w", host, err)
	}
	auth := opts.Authenticator
	if auth == nil {
		// Keychains know Docker Hub as index.docker.io.
		target := reg
		if host == DockerHub || host == "index.docker.io" {
			target, _ = name.NewRegistry(DockerHub)
		}
		if auth, err = authn.Resolve(ctx, opts.Keychain, target); err != nil {
			return nil, fmt.Errorf("registry %s: credentials: %w", host, err)
		}
	}
	base := baseTransport(opts)
	c := &v2Client{
		host:   host,
		api:    api,
		scheme: scheme,
		reg:    reg,
		auth:   auth,
		base:   base,
		opts:   opts,
		retry:  newRetryPolicy(opts),
		log:    opts.Logger.WithField("registry", host),
	}
	c.authBase = hopTransport(base, api, scheme, opts)
	setup := scopeSetupTimeout
	if opts.RequestTimeout > 0 {
		setup = 3 * opts.RequestTimeout // ping, token, a redirect
	}
	c.scopes = newScopeCache(c.newScopeClient, setup)
	return c, nil
}

// probe asks GET /v2/ whether the host speaks v2: 200 or 401 (the
// registry wants auth) mean yes, 404 means no; anything else is an error.
func (c *v2Client) probe(ctx context.Context) (bool, error) {
	url := c.url("/v2/")
	ping := &retryTransport{next: &exchange{client: fixedClient(&http.Client{Transport: c.authBase})}, policy: c.retry, log: c.log}
	resp, err := send(ctx, ping, http.MethodGet, url, nil)
	if err != nil {
		return false, fmt.Errorf("probe registry %s: %w", c.host, err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK, http.StatusUnauthorized:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("probe registry %s: %w", c.host, newHTTPError(resp))
}
