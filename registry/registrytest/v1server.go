package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// V1RegistryVersion is what the server sends in X-Docker-Registry-Version.
const V1RegistryVersion = "0.6.0"

// V1SessionCookie is the name of the session cookie the index sets.
const V1SessionCookie = "session"

// V1Option configures a V1Server.
type V1Option func(*v1Config)

type v1Config struct {
	tokenChecks   bool
	requireCookie bool
	user, pass    string
	listeners     int
	noRanges      bool
	noSearch      bool
	noSize        bool
	standalone    *bool
}

// V1WithTokenChecks makes every registry-endpoint request (tags, images)
// require "Authorization: Token signature=…,repository="ns/repo",access=read"
// with a token the index handed out for that repository; 401 otherwise.
// Default: off (a standalone registry that needs no token).
func V1WithTokenChecks() V1Option { return func(c *v1Config) { c.tokenChecks = true } }

// V1WithCookieRequired makes registry-endpoint requests also require the
// session cookie the index set (401 without it). Default: off.
func V1WithCookieRequired() V1Option { return func(c *v1Config) { c.requireCookie = true } }

// V1WithBasicAuth makes the index (/images) require HTTP Basic credentials
// user:pass (401 with WWW-Authenticate when missing or wrong). Registry
// endpoints then accept either a valid Token or the same Basic credentials.
// Default: no credentials needed.
func V1WithBasicAuth(user, pass string) V1Option {
	return func(c *v1Config) { c.user, c.pass = user, pass }
}

// V1WithListeners makes the server listen on n ports (default 1), all
// serving the same content; Hosts lists them and the index advertises all of
// them in X-Docker-Endpoints unless SetEndpoints says otherwise.
func V1WithListeners(n int) V1Option { return func(c *v1Config) { c.listeners = n } }

// V1WithoutRanges makes /layer ignore Range (always 200, full body) and not
// send Accept-Ranges. Default: ranges honoured.
func V1WithoutRanges() V1Option { return func(c *v1Config) { c.noRanges = true } }

// V1WithoutSizeHeader makes /json omit X-Docker-Size, as some registries
// did. Default: sent.
func V1WithoutSizeHeader() V1Option { return func(c *v1Config) { c.noSize = true } }

// V1WithoutSearch makes /v1/search answer 404, as a registry without an
// index does. Default: search served.
func V1WithoutSearch() V1Option { return func(c *v1Config) { c.noSearch = true } }

// V1WithStandalone sets X-Docker-Registry-Standalone. Default: "true"
// without token checks, "false" with them (the registry defers to the index).
func V1WithStandalone(b bool) V1Option { return func(c *v1Config) { c.standalone = &b } }

// V1Fault makes the server misbehave on matching requests: set Status to
// answer with an error, CutAfter to cut layer bodies, Stall to hang.
type V1Fault struct {
	Host       string // only requests that arrived on this host:port; "" any
	Path       string // only paths starting with this; "" any
	Status     int    // answer this status with an empty JSON error body instead
	RetryAfter string // sent with Status when set
	// CutAfter > 0 cuts a /layer response body after this many bytes by
	// dropping the connection (the headers promised the full length).
	CutAfter int64
	// Stall > 0 hangs the request this long (or until the client goes
	// away): before the headers, or with CutAfter after that many body
	// bytes, then drops the connection.
	Stall time.Duration
	// Times is how many matching requests the fault applies to; 0 = all.
	Times int
}

// V1Request is one request the server saw, for tests to inspect.
type V1Request struct {
	Method, Host, Path, Query string
	Route                     string // ping, images, tags, tag, json, ancestry, layer, search, unknown
	Range                     string
	Authorization             string
	HadCookie                 bool // the session cookie was present and valid
	XDockerToken              string
	Status                    int // 0 while the handler is still running
}

// V1Image is one image (one layer) the server holds.
type V1Image struct {
	ID       string
	Parent   string
	JSON     []byte // exactly as served by /json
	Layer    []byte // exactly as served by /layer
	Checksum string // tarsum of the layer with JSON as extra, as the images list gives it
	// PayloadChecksum is "sha256:" of JSON + "\n" + Layer, as X-Docker-Payload-Checksum.
	PayloadChecksum string
	Created         time.Time
}

// V1LayerSpec describes one layer to add with AddImage.
type V1LayerSpec struct {
	Tar       []byte    // layer bytes as served (tar, or gzip-compressed tar)
	Created   time.Time // zero: a fixed time derived from the position
	CreatedBy string    // container_config.Cmd, for history
}

type v1Repo struct {
	name        string // ns/repo
	description string
	tags        map[string]string // tag → image id
	images      map[string]bool   // image ids listed by the index (every layer of every tag)
}

// V1Server is an in-process Docker Registry v1 index and registry on
// 127.0.0.1, for the v1 client (registry's v1*.go files); ServeHTTP lists
// its routes. Safe for concurrent use.
type V1Server struct {
	// URL is "http://" + Host, the index (and first registry endpoint).
	URL string
	// Host is the index host:port.
	Host string
	// Hosts lists every listener's host:port, Host first.
	Hosts []string

	cfg       v1Config
	servers   []*http.Server
	listeners []net.Listener

	mu        sync.Mutex
	redirect  string // base URL layer requests are redirected to; "" none
	endpoints []string
	repos     map[string]*v1Repo
	images    map[string]*V1Image
	tokens    map[string]string // signature → repository
	sessions  map[string]bool   // cookie values handed out
	faults    []*V1Fault
	log       []V1Request
	logGen    int // bumped by ResetLog
	seq       int
	layerOut  int64 // layer bytes written
}

// StartV1Server starts a V1Server for a test and stops it in t.Cleanup.
func StartV1Server(t testing.TB, opts ...V1Option) *V1Server {
	t.Helper()
	s, err := NewV1Server(opts...)
	if err != nil {
		t.Fatalf("start v1 server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewV1Server starts a V1Server; the caller must Close it.
func NewV1Server(opts ...V1Option) (*V1Server, error) {
	s := &V1Server{
		cfg:      v1Config{listeners: 1},
		repos:    map[string]*v1Repo{},
		images:   map[string]*V1Image{},
		tokens:   map[string]string{},
		sessions: map[string]bool{},
	}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.listeners < 1 {
		s.cfg.listeners = 1
	}
	for i := 0; i < s.cfg.listeners; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("v1 server listen: %w", err)
		}
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
		s.listeners = append(s.listeners, l)
		s.servers = append(s.servers, srv)
		s.Hosts = append(s.Hosts, l.Addr().String())
		go srv.Serve(l) //nolint:errcheck // returns ErrServerClosed on Close
	}
	s.Host = s.Hosts[0]
	s.URL = "http://" + s.Host
	s.endpoints = append([]string(nil), s.Hosts...)
	return s, nil
}

// Close stops every listener and open connection.
func (s *V1Server) Close() {
	for _, srv := range s.servers {
		srv.Close()
	}
}

// SetEndpoints replaces the hosts the index lists in X-Docker-Endpoints, in
// order (for example a dead port first, to test fail-over).
func (s *V1Server) SetEndpoints(hosts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints = append([]string(nil), hosts...)
}

// SetLayerRedirect makes /layer answer 307 to base + the request path once
// the request is authorized, as a registry whose layers live on a storage
// host; "" turns it off.
func (s *V1Server) SetLayerRedirect(base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirect = base
}

// InjectFault adds a fault; faults are checked in the order added.
func (s *V1Server) InjectFault(f V1Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *V1Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// ExpireTokens forgets every token and session cookie handed out, as an index
// whose tokens timed out; clients must do the handshake again.
func (s *V1Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]string{}
	s.sessions = map[string]bool{}
}

// Requests returns a copy of every request seen so far.
func (s *V1Server) Requests() []V1Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]V1Request(nil), s.log...)
}

// Count returns how many requests of route (ping, images, tags, tag, json,
// ancestry, layer, search) the server has seen.
func (s *V1Server) Count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.log {
		if r.Route == route {
			n++
		}
	}
	return n
}

// LayerBytesServed is the total of layer body bytes the server has set out
// to write (a client that stops reading may not get them all).
func (s *V1Server) LayerBytesServed() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.layerOut
}

// ResetLog clears the request log and counters.
func (s *V1Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
	s.logGen++
	s.layerOut = 0
}

// V1DeadHost returns a 127.0.0.1 host:port that refuses connections: a port
// that was listened on and closed again.
func V1DeadHost(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("v1 dead host: %v", err)
	}
	host := l.Addr().String()
	l.Close()
	return host
}
