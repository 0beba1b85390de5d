package registrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"

	// Storage driver and access controllers register themselves in init.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// Config describes a reference registry for Start. The zero value is a usable
// anonymous registry on 127.0.0.1 with a temporary storage directory.
type Config struct {
	// Addr is the listen address. Default "127.0.0.1:0" (a free port).
	Addr string
	// Dir is the storage root. Default: a new temporary directory that Close
	// removes. A Dir given here is kept.
	Dir string
	// LogLevel, when set, is the level ("error", "warn", "info", "debug")
	// of logrus's standard logger, which distribution logs through: it is
	// process-wide, so the default leaves it alone.
	LogLevel string
	// LogRequests lets distribution's per-request log lines through (each
	// 404 and 401 is one at level error). By default they are dropped from
	// logrus's standard logger output, recognised by their http.request.id
	// field, while any registry with LogRequests runs.
	LogRequests bool
	// CatalogMaxEntries caps /v2/_catalog?n=. Default 1000 (distribution's
	// own default).
	CatalogMaxEntries int
	// InMemory keeps blobs and manifests in memory instead of under Dir
	// (distribution's inmemory driver: no fsync, so pushes are several
	// times faster). Default off.
	InMemory bool
	// Delete enables DELETE of manifests and blobs. Default off.
	Delete bool

	// Htpasswd, when set, turns on HTTP Basic auth (distribution's htpasswd
	// access controller) with this one account. Default: no auth.
	Htpasswd *Credentials
	// Token, when set, turns on Bearer token auth with a token server this
	// package starts beside the registry. Default: no auth. Htpasswd and
	// Token are exclusive.
	Token *TokenConfig

	// ProxyRemoteURL, when set, makes the registry a pull-through cache of
	// the registry at this URL (distribution's proxy.remoteurl): it
	// refuses pushes, and keeps what it fetched for ProxyTTL. Default: an
	// ordinary registry.
	ProxyRemoteURL string
	// ProxyTTL is proxy.ttl: how long fetched content is kept. Zero (the
	// default here) keeps it forever and starts no expiry scheduler, whose
	// goroutine would outlive a test; distribution's own default is 168h.
	ProxyTTL time.Duration
}

// Credentials is a user name and password.
type Credentials struct {
	User, Password string
}

// Option changes a Config; StartRegistry applies them in order.
type Option func(*Config)

// WithDir stores the registry's data in dir instead of t.TempDir(), so a
// later registry can serve the same content.
func WithDir(dir string) Option { return func(c *Config) { c.Dir = dir } }

// WithAddr listens on addr instead of "127.0.0.1:0".
func WithAddr(addr string) Option { return func(c *Config) { c.Addr = addr } }

// WithLogLevel sets the level of logrus's standard logger, process-wide
// (default: unchanged).
func WithLogLevel(level string) Option { return func(c *Config) { c.LogLevel = level } }

// WithRequestLogs shows distribution's per-request log lines (default:
// dropped).
func WithRequestLogs() Option { return func(c *Config) { c.LogRequests = true } }

// WithCatalogMaxEntries caps the catalog page size (default 1000).
func WithCatalogMaxEntries(n int) Option { return func(c *Config) { c.CatalogMaxEntries = n } }

// WithInMemoryStorage keeps the registry's content in memory (faster
// pushes; nothing on disk). Default: filesystem storage.
func WithInMemoryStorage() Option { return func(c *Config) { c.InMemory = true } }

// WithDelete enables DELETE requests (default off).
func WithDelete() Option { return func(c *Config) { c.Delete = true } }

// WithHtpasswd turns on HTTP Basic auth with one account user:pass. Every
// request, pulls included, then needs those credentials.
func WithHtpasswd(user, pass string) Option {
	return func(c *Config) { c.Htpasswd = &Credentials{User: user, Password: pass} }
}

// WithPullThrough makes the registry a pull-through cache of remoteURL
// (another registry's URL), keeping what it fetched forever (ProxyTTL 0).
func WithPullThrough(remoteURL string) Option {
	return func(c *Config) { c.ProxyRemoteURL = remoteURL }
}

// WithTokenAuth turns on Bearer token auth: the registry answers 401 with a
// WWW-Authenticate challenge naming a token server on 127.0.0.1 that grants
// tokens to user:pass (all requested actions). See TokenConfig for the rest,
// and the TokenOption helpers (WithAnonymousPull, WithTokenExpiry) to tune it.
func WithTokenAuth(user, pass string, opts ...TokenOption) Option {
	return func(c *Config) {
		tc := &TokenConfig{User: user, Password: pass}
		for _, o := range opts {
			o(tc)
		}
		c.Token = tc
	}
}

// Registry is a running reference registry (distribution/v3) with a
// counting handler in front of it.
type Registry struct {
	// Host is "127.0.0.1:port", what a client puts in a reference.
	Host string
	// URL is "http://" + Host.
	URL string
	// Dir is the storage root.
	Dir string
	// Credentials are the account the registry accepts (Htpasswd or Token
	// auth), nil for an anonymous registry.
	Credentials *Credentials
	// Token is the token server when token auth is on, else nil.
	Token *TokenServer

	app         *handlers.App
	server      *http.Server
	listener    net.Listener
	served      chan struct{}
	removeDir   bool
	closeOnce   sync.Once
	logRequests bool
	closeErr    error

	counter *requestCounter
}

// StartRegistry starts a reference registry for the test with storage in
// t.TempDir() and distribution's per-request logging dropped, and stops it
// in t.Cleanup. It fails the test if the registry cannot start.
func StartRegistry(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	})
	return r
}

// Start starts a reference registry as cfg describes and returns once it is
// listening. ctx only bounds start-up; the registry runs until Close.
func Start(ctx context.Context, cfg Config) (reg *Registry, err error) {
	if cfg.Htpasswd != nil && cfg.Token != nil {
		return nil, errors.New("start registry: Htpasswd and Token auth are exclusive")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}
	if cfg.LogLevel != "" {
		level, err := logrus.ParseLevel(cfg.LogLevel)
		if err != nil {
			return nil, fmt.Errorf("start registry: log level: %w", err)
		}
		logrus.SetLevel(level)
	}
	quietRequestLogs()
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	reg = &Registry{counter: newRequestCounter(), served: make(chan struct{}), logRequests: cfg.LogRequests}
	if reg.logRequests {
		showRequestLogs.Add(1)
	}
	// Undo whatever was started if a later step fails.
	defer func() {
		if err != nil {
			reg.cleanupAfterFailedStart()
			reg = nil
		}
	}()

	reg.Dir = cfg.Dir
	if reg.Dir == "" {
		dir, err := os.MkdirTemp("", "regfs-registry-")
		if err != nil {
			return reg, fmt.Errorf("start registry: storage dir: %w", err)
		}
		reg.Dir, reg.removeDir = dir, true
	}

	reg.listener, err = net.Listen("tcp", addr)
	if err != nil {
		return reg, fmt.Errorf("start registry: listen %s: %w", addr, err)
	}
	reg.Host = reg.listener.Addr().String()
	reg.URL = "http://" + reg.Host

	dc := &configuration.Configuration{
		Version: "0.1",
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": filepath.Join(reg.Dir, "storage")},
			// The purger would start a goroutine that outlives tests.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	if cfg.InMemory {
		delete(dc.Storage, "filesystem")
		dc.Storage["inmemory"] = configuration.Parameters{}
	}
	if cfg.Delete {
		dc.Storage["delete"] = configuration.Parameters{"enabled": true}
	}
	dc.HTTP.Addr = reg.Host
	dc.HTTP.Secret = "regfs-registrytest-secret"
	if cfg.ProxyRemoteURL != "" {
		ttl := cfg.ProxyTTL
		dc.Proxy = configuration.Proxy{RemoteURL: cfg.ProxyRemoteURL, TTL: &ttl}
	}
	dc.Catalog.MaxEntries = cfg.CatalogMaxEntries
	if dc.Catalog.MaxEntries <= 0 {
		dc.Catalog.MaxEntries = 1000
	}

	switch {
	case cfg.Htpasswd != nil:
		path := filepath.Join(reg.Dir, "htpasswd")
		if err := writeHtpasswd(path, *cfg.Htpasswd); err != nil {
			return reg, fmt.Errorf("start registry: %w", err)
		}
		dc.Auth = configuration.Auth{"htpasswd": configuration.Parameters{
			"realm": "regfs-test", "path": path,
		}}
		c := *cfg.Htpasswd
		reg.Credentials = &c
	case cfg.Token != nil:
		ts, err := newTokenServer(*cfg.Token, reg.Dir, reg.URL)
		if err != nil {
			return reg, fmt.Errorf("start registry: %w", err)
		}
		reg.Token = ts
		dc.Auth = configuration.Auth{"token": configuration.Parameters{
			"realm":          ts.Realm,
			"service":        ts.Service,
			"issuer":         ts.Issuer,
			"rootcertbundle": ts.rootCertPath,
			// The realm follows the request's Host (and X-Forwarded-Proto,
			// which the front handler sets), so it names a FaultProxy when
			// the request came through one.
			"autoredirect":     true,
			"autoredirectpath": TokenPath,
		}}
		c := Credentials{User: cfg.Token.User, Password: cfg.Token.Password}
		reg.Credentials = &c
	}

	reg.app, err = newApp(dc)
	if err != nil {
		return reg, fmt.Errorf("start registry: %w", err)
	}
	reg.server = &http.Server{
		Handler:           reg.frontHandler(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	go func() {
		defer close(reg.served)
		_ = reg.server.Serve(reg.listener)
	}()
	return reg, nil
}

// frontHandler serves the token endpoint (uncounted: the token server keeps
// its own log) and passes everything else, counted, to distribution.
func (r *Registry) frontHandler() http.Handler {
	app := r.counter.wrap(r.app)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.Token != nil && req.URL.Path == TokenPath {
			r.Token.serveToken(w, req)
			return
		}
		if req.Header.Get("X-Forwarded-Proto") == "" {
			req.Header.Set("X-Forwarded-Proto", "http")
		}
		app.ServeHTTP(w, req)
	})
}

// newApp builds distribution's handler, turning its configuration panics
// into errors.
func newApp(dc *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("distribution app: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), dc), nil
}

func (r *Registry) cleanupAfterFailedStart() {
	if r.logRequests {
		showRequestLogs.Add(-1)
	}
	if r.listener != nil {
		_ = r.listener.Close()
	}
	if r.app != nil {
		_ = r.app.Shutdown()
	}
	if r.removeDir {
		_ = os.RemoveAll(r.Dir)
	}
}

// Close stops the registry at once, closing open
// connections, and removes the storage directory if Start made it.
// Calling it again returns the first result.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		if err := r.server.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close registry server: %w", err))
		}
		<-r.served
		if err := r.app.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("shut down registry app: %w", err))
		}
		if r.logRequests {
			showRequestLogs.Add(-1)
		}
		if r.removeDir {
			if err := os.RemoveAll(r.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove registry dir: %w", err))
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// Stats returns a snapshot of the server-side counters since start or the
// last ResetStats.
func (r *Registry) Stats() Stats { return r.counter.stats() }

// ResetStats zeroes the counters and the request log.
func (r *Registry) ResetStats() { r.counter.reset() }

// Requests returns the logged requests, oldest first (at most
// MaxLoggedRequests since the last reset; counters keep counting after).
func (r *Registry) Requests() []Request { return r.counter.requests() }

// CountRequests counts logged requests for which match returns true.
func (r *Registry) CountRequests(match func(Request) bool) int {
	n := 0
	for _, q := range r.counter.requests() {
		if match(q) {
			n++
		}
	}
	return n
}

// Request is one request as the counting handler saw it.
type Request struct {
	Method string
	Path   string // URL path, e.g. /v2/test/small/manifests/latest
	Query  string // raw query
	// Range is the request's Range header, "" if none.
	Range string
	// Authorization is the scheme of the Authorization header ("Basic",
	// "Bearer"), "" if none.
	Authorization string
	// Status is the status written; 0 until the handler writes one, and
	// when it wrote nothing (a dropped connection, or an implicit empty
	// 200).
	Status int
	// Bytes is the number of response body bytes written so far.
	Bytes int64
	// Done is set when the handler has returned: Bytes is final.
	Done bool
}

// Stats are the counters of a Registry or FaultProxy.
type Stats struct {
	// Requests is the number of requests received.
	Requests int64
	// ByMethod counts requests per HTTP method.
	ByMethod map[string]int64
	// ByPath counts requests per URL path (all methods).
	ByPath map[string]int64
	// BytesServed is the total of response body bytes written.
	BytesServed int64
	// BlobBytesServed is the part of BytesServed that answered blob GETs
	// (paths containing /blobs/).
	BlobBytesServed int64
}

// MaxLoggedRequests bounds the request log of a Registry or FaultProxy, so a
// long-running server does not grow without end.
const MaxLoggedRequests = 100000

// requestCounter counts requests and response bytes of a handler. A request
// enters the log as it arrives and its entry is kept current while the
// response is written: a client may have read a whole body before the
// handler returns, and a test that counts requests right after its read must
// see it.
type requestCounter struct {
	mu  sync.Mutex
	st  Stats
	log []Request
	gen int // bumped by reset: entries of requests from before are gone
}

func newRequestCounter() *requestCounter {
	c := &requestCounter{}
	c.reset()
	return c
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st = Stats{ByMethod: map[string]int64{}, ByPath: map[string]int64{}}
	c.log = nil
	c.gen++
}

func (c *requestCounter) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.ByMethod = make(map[string]int64, len(c.st.ByMethod))
	for k, v := range c.st.ByMethod {
		s.ByMethod[k] = v
	}
	s.ByPath = make(map[string]int64, len(c.st.ByPath))
	for k, v := range c.st.ByPath {
		s.ByPath[k] = v
	}
	return s
}

func (c *requestCounter) requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.log...)
}

// logEntry names a request's entry in the log: index and generation.
type logEntry struct {
	i, gen int
}

// begin counts and logs a request as it arrives, so a test sees it even
// while the response is still being written.
func (c *requestCounter) begin(r *http.Request) logEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Requests++
	c.st.ByMethod[r.Method]++
	c.st.ByPath[r.URL.Path]++
	if len(c.log) >= MaxLoggedRequests {
		return logEntry{-1, c.gen}
	}
	scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	c.log = append(c.log, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Range: r.Header.Get("Range"), Authorization: scheme,
	})
	return logEntry{len(c.log) - 1, c.gen}
}

// entryLocked returns the log entry e, nil if a reset dropped it.
func (c *requestCounter) entryLocked(e logEntry) *Request {
	if e.gen != c.gen || e.i < 0 || e.i >= len(c.log) {
		return nil
	}
	return &c.log[e.i]
}

func (c *requestCounter) setStatus(e logEntry, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.entryLocked(e); q != nil {
		q.Status = code
	}
}

func (c *requestCounter) finish(e logEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.entryLocked(e); q != nil {
		q.Done = true
	}
}

func (c *requestCounter) addBytes(e logEntry, path string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.BytesServed += n
	if strings.Contains(path, "/blobs/") {
		c.st.BlobBytesServed += n
	}
	if q := c.entryLocked(e); q != nil {
		q.Bytes += n
	}
}

func (c *requestCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := c.begin(r)
		defer c.finish(e)
		h.ServeHTTP(&countingWriter{ResponseWriter: w, counter: c, entry: e, path: r.URL.Path}, r)
	})
}

// countingWriter counts body bytes as they are written (not at the end), so
// a counter read during a long response is current.
type countingWriter struct {
	http.ResponseWriter
	counter *requestCounter
	entry   logEntry
	path    string
	status  int
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.counter.setStatus(w.entry, code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.counter.setStatus(w.entry, http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.counter.addBytes(w.entry, w.path, int64(n))
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sortedKeys is used by String methods and tests.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// String summarises the counters, for test failure messages.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d bytes served (%d blob)", s.Requests, s.BytesServed, s.BlobBytesServed)
	for _, k := range sortedKeys(s.ByMethod) {
		fmt.Fprintf(&b, ", %s=%d", k, s.ByMethod[k])
	}
	return b.String()
}

// showRequestLogs counts running registries that want request logs.
var (
	showRequestLogs atomic.Int64
	quietOnce       sync.Once
)

// quietRequestLogs puts a filter on logrus's standard output that drops
// distribution's per-request lines. Distribution has no logger of its own
// to configure (its default logger is logrus's standard one), so the
// filter is the only way to quiet it without changing the level for
// everyone else in the process.
func quietRequestLogs() {
	quietOnce.Do(func() {
		std := logrus.StandardLogger()
		std.SetOutput(&requestLogFilter{out: std.Out})
	})
}

type requestLogFilter struct{ out io.Writer }

// distributionNoise marks distribution's log lines that every test
// registry produces: per-request lines, the start-up redis notice, and the
// token verifier's reasons for a 401.
var distributionNoise = [][]byte{
	[]byte("http.request.id"),
	[]byte("redis not configured"),
	[]byte(`msg="token `),
	[]byte(`msg="failed to verify token`),
}

// Write gets one formatted entry per call (logrus holds its lock).
func (f *requestLogFilter) Write(p []byte) (int, error) {
	if showRequestLogs.Load() == 0 {
		for _, n := range distributionNoise {
			if bytes.Contains(p, n) {
				return len(p), nil
			}
		}
	}
	return f.out.Write(p)
}
