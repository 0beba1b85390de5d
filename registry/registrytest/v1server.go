package registrytest

// The v1 test server: a Docker Registry v1 index and registry in one process,
// built from docker's v1 documentation (registry_api.md, the index/hub API
// doc, and the client side in docker's old registry/session.go), since no
// live v1 registry exists anywhere today.
//
// Routes (GET only; the API is read-only here):
//
//	/v1/_ping                                   200 "true", X-Docker-Registry-Version, -Standalone
//	/v1/repositories/<ns>/<repo>/images         index: [{id, checksum}]; with "X-Docker-Token: true"
//	                                            also X-Docker-Token, X-Docker-Endpoints, a session cookie
//	/v1/repositories/<ns>/<repo>/tags           {tag: image id}
//	/v1/repositories/<ns>/<repo>/tags/<tag>     "image id"
//	/v1/images/<id>/json                        image JSON, X-Docker-Size, X-Docker-Checksum,
//	                                            X-Docker-Payload-Checksum
//	/v1/images/<id>/ancestry                    [id, parent, ..., base]
//	/v1/images/<id>/layer                       layer bytes; Accept-Ranges: bytes, Range → 206, 416
//	/v1/search?q=&n=&page=                      {query, num_results, num_pages, page, page_size, results}
//
// A one-component repository name means library/<name>, as docker does.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/tarsum"
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
// 127.0.0.1. Safe for concurrent use.
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

// V1NormalizeRepo adds "library/" to one-component names, as docker's v1
// client and registry do.
func V1NormalizeRepo(name string) string {
	name = strings.Trim(name, "/")
	if !strings.Contains(name, "/") {
		return "library/" + name
	}
	return name
}

// V1ImageID is the deterministic, random-looking v1 image ID the server
// gives a layer on top of parent (empty for a base layer).
func V1ImageID(parent string, layer []byte) string {
	ld := sha256.Sum256(layer)
	h := sha256.New()
	h.Write([]byte("regfs v1 image id\x00"))
	h.Write([]byte(parent))
	h.Write([]byte{0})
	h.Write(ld[:])
	return hex.EncodeToString(h.Sum(nil))
}

// AddImage adds the image made of layers (base first) to repo, tagged tag
// (no tag when tag is ""), and returns its images base first; the last one is
// the image the tag names. Layers shared with images already added (same
// bytes on the same parent) get the same IDs.
func (s *V1Server) AddImage(repo, tag string, layers ...V1LayerSpec) ([]*V1Image, error) {
	if len(layers) == 0 {
		return nil, errors.New("v1 add image: no layers")
	}
	repo = V1NormalizeRepo(repo)
	var out []*V1Image
	parent := ""
	for i, l := range layers {
		id := V1ImageID(parent, l.Tar)
		s.mu.Lock()
		img, ok := s.images[id]
		s.mu.Unlock()
		if !ok {
			var err error
			img, err = newV1Image(id, parent, i, l)
			if err != nil {
				return nil, fmt.Errorf("v1 add image %s layer %d: %w", repo, i, err)
			}
		}
		out = append(out, img)
		parent = id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repo)
	for _, img := range out {
		s.images[img.ID] = img
		r.images[img.ID] = true
	}
	if tag != "" {
		r.tags[tag] = out[len(out)-1].ID
	}
	return out, nil
}

// Tag points tag of repo at an image the server already holds.
func (s *V1Server) Tag(repo, tag, id string) error {
	repo = V1NormalizeRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[id]; !ok {
		return fmt.Errorf("v1 tag %s:%s: unknown image %s", repo, tag, id)
	}
	r := s.repoLocked(repo)
	for cur := id; cur != ""; cur = s.images[cur].Parent {
		r.images[cur] = true
	}
	r.tags[tag] = id
	return nil
}

// SetDescription sets the description search shows for repo (created empty
// if it does not exist yet).
func (s *V1Server) SetDescription(repo, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoLocked(V1NormalizeRepo(repo)).description = desc
}

// Image returns the image with id, or nil.
func (s *V1Server) Image(id string) *V1Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.images[id]
}

func (s *V1Server) repoLocked(name string) *v1Repo {
	r, ok := s.repos[name]
	if !ok {
		r = &v1Repo{name: name, tags: map[string]string{}, images: map[string]bool{}}
		s.repos[name] = r
	}
	return r
}

func newV1Image(id, parent string, pos int, l V1LayerSpec) (*V1Image, error) {
	created := l.Created
	if created.IsZero() {
		created = time.Date(2014, 6, 1, 12, 0, pos, 0, time.UTC)
	}
	cmd := l.CreatedBy
	if cmd == "" {
		cmd = fmt.Sprintf("#(nop) ADD layer %d", pos)
	}
	raw, err := v1Uncompressed(l.Tar)
	if err != nil {
		return nil, err
	}
	js := map[string]any{
		"id":             id,
		"created":        created.Format(time.RFC3339Nano),
		"container":      V1ImageID("container", []byte(id)),
		"docker_version": "1.3.0",
		"architecture":   "amd64",
		"os":             "linux",
		"Size":           len(raw),
		"container_config": map[string]any{
			"Cmd": []string{"/bin/sh", "-c", cmd},
		},
	}
	if parent != "" {
		js["parent"] = parent
	}
	jb, err := json.Marshal(js)
	if err != nil {
		return nil, err
	}
	checksum, err := v1TarSum(l.Tar, jb)
	if err != nil {
		return nil, err
	}
	ph := sha256.New()
	ph.Write(jb)
	ph.Write([]byte{'\n'})
	ph.Write(l.Tar)
	return &V1Image{
		ID:              id,
		Parent:          parent,
		JSON:            jb,
		Layer:           l.Tar,
		Checksum:        checksum,
		PayloadChecksum: "sha256:" + hex.EncodeToString(ph.Sum(nil)),
		Created:         created,
	}, nil
}

// v1Uncompressed returns the tar inside b: b itself, or b gunzipped.
func v1Uncompressed(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gunzip layer: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("gunzip layer: %w", err)
	}
	return raw, nil
}

// ServeHTTP routes one request; see the file comment for the routes.
func (s *V1Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &V1Request{
		Method: r.Method, Host: r.Host, Path: r.URL.Path, Query: r.URL.RawQuery,
		Range: r.Header.Get("Range"), Authorization: r.Header.Get("Authorization"),
		XDockerToken: r.Header.Get("X-Docker-Token"),
	}
	rec.Route, _, _ = v1Route(r.URL.Path)
	if c, err := r.Cookie(V1SessionCookie); err == nil {
		s.mu.Lock()
		rec.HadCookie = s.sessions[c.Value]
		s.mu.Unlock()
	}
	sw := &v1StatusWriter{ResponseWriter: w, status: http.StatusOK}
	// Logged on arrival, so the log's order is the arrival order even when a
	// handler is still writing a body the client gave up on; Status is
	// filled in when the handler returns (0 until then).
	s.mu.Lock()
	s.log = append(s.log, *rec)
	idx, gen := len(s.log)-1, s.logGen
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if gen == s.logGen {
			s.log[idx].Status = sw.status
		}
		s.mu.Unlock()
	}()
	w.Header().Set("X-Docker-Registry-Version", V1RegistryVersion)
	w.Header().Set("Vary", "Accept")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		v1Error(sw, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if f := s.matchFault(r, false); f != nil {
		if f.Stall > 0 {
			v1Stall(r, f.Stall)
			if f.Status == 0 {
				panic(http.ErrAbortHandler)
			}
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		v1Error(sw, f.Status, "injected fault")
		return
	}
	route, repo, arg := v1Route(r.URL.Path)
	switch route {
	case "ping":
		s.servePing(sw)
	case "images":
		s.serveImages(sw, r, repo)
	case "tags", "tag":
		s.serveTags(sw, r, repo, arg, route == "tag")
	case "json", "ancestry", "layer":
		s.serveImage(sw, r, route, arg)
	case "search":
		s.serveSearch(sw, r)
	default:
		v1Error(sw, http.StatusNotFound, "not found")
	}
}

type v1StatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *v1StatusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *v1StatusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// v1Route splits a path into route, repository (normalized) and argument
// (tag or image id).
func v1Route(p string) (route, repo, arg string) {
	switch {
	case p == "/v1/_ping" || p == "/v1/_ping/":
		return "ping", "", ""
	case p == "/v1/search":
		return "search", "", ""
	case strings.HasPrefix(p, "/v1/images/"):
		parts := strings.Split(strings.TrimPrefix(p, "/v1/images/"), "/")
		if len(parts) == 2 && parts[0] != "" {
			switch parts[1] {
			case "json", "ancestry", "layer":
				return parts[1], "", parts[0]
			}
		}
	case strings.HasPrefix(p, "/v1/repositories/"):
		rest := strings.Trim(strings.TrimPrefix(p, "/v1/repositories/"), "/")
		if name, ok := strings.CutSuffix(rest, "/images"); ok && name != "" {
			return "images", V1NormalizeRepo(name), ""
		}
		if name, ok := strings.CutSuffix(rest, "/tags"); ok && name != "" {
			return "tags", V1NormalizeRepo(name), ""
		}
		if i := strings.LastIndex(rest, "/tags/"); i > 0 {
			return "tag", V1NormalizeRepo(rest[:i]), rest[i+len("/tags/"):]
		}
	}
	return "unknown", "", ""
}

// matchFault finds (and counts) the first fault for r: a status fault, or
// with cut set, a body-cut fault.
func (s *V1Server) matchFault(r *http.Request, cut bool) *V1Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Host != "" && f.Host != r.Host {
			continue
		}
		if f.Path != "" && !strings.HasPrefix(r.URL.Path, f.Path) {
			continue
		}
		if cut != (f.Status == 0 && f.CutAfter > 0) || (!cut && f.Status == 0 && f.Stall <= 0) {
			continue
		}
		cp := *f
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return &cp
	}
	return nil
}

func v1Error(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg}) //nolint:errcheck
}

func v1JSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		v1Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b) //nolint:errcheck
}

func (s *V1Server) standalone() bool {
	if s.cfg.standalone != nil {
		return *s.cfg.standalone
	}
	return !s.cfg.tokenChecks
}

func (s *V1Server) servePing(w http.ResponseWriter) {
	w.Header().Set("X-Docker-Registry-Standalone", strconv.FormatBool(s.standalone()))
	v1JSON(w, true)
}

func (s *V1Server) basicOK(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	return ok && u == s.cfg.user && p == s.cfg.pass
}

// serveImages is the index's repository image list and token handshake.
func (s *V1Server) serveImages(w http.ResponseWriter, r *http.Request, repo string) {
	if s.cfg.user != "" && !s.basicOK(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="regfs v1 index"`)
		v1Error(w, http.StatusUnauthorized, "authentication required")
		return
	}
	s.mu.Lock()
	rp, ok := s.repos[repo]
	if !ok {
		s.mu.Unlock()
		v1Error(w, http.StatusNotFound, "repository not found")
		return
	}
	type imgData struct {
		ID       string `json:"id"`
		Checksum string `json:"checksum,omitempty"`
	}
	list := []imgData{}
	for id := range rp.images {
		list = append(list, imgData{ID: id, Checksum: s.images[id].Checksum})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	if r.Header.Get("X-Docker-Token") == "true" {
		s.seq++
		sig := sha256.Sum256([]byte(fmt.Sprintf("regfs v1 token %s %d %d", repo, s.seq, time.Now().UnixNano())))
		signature := hex.EncodeToString(sig[:16])
		s.tokens[signature] = repo
		cookie := base64.RawURLEncoding.EncodeToString(sig[16:])
		s.sessions[cookie] = true
		w.Header().Set("X-Docker-Token", fmt.Sprintf(`signature=%s,repository="%s",access=read`, signature, repo))
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Token signature=%s,repository="%s",access=read`, signature, repo))
		w.Header().Set("X-Docker-Endpoints", strings.Join(s.endpoints, ", "))
		http.SetCookie(w, &http.Cookie{Name: V1SessionCookie, Value: cookie, Path: "/", HttpOnly: true})
	}
	s.mu.Unlock()
	v1JSON(w, list)
}

// parseV1Token reads `Token signature=…,repository="ns/repo",access=read`.
func parseV1Token(h string) (signature, repo, access string, ok bool) {
	v, found := strings.CutPrefix(h, "Token ")
	if !found {
		return "", "", "", false
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		val = strings.Trim(val, `"`)
		switch k {
		case "signature":
			signature = val
		case "repository":
			repo = val
		case "access":
			access = val
		}
	}
	return signature, repo, access, signature != "" && repo != ""
}

// authorize checks a registry-endpoint request against the token and cookie
// rules; allowed reports whether repo (or, for image routes, any repository
// holding image) may be read. It writes the 401 itself.
func (s *V1Server) authorize(w http.ResponseWriter, r *http.Request, repo, image string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.requireCookie {
		c, err := r.Cookie(V1SessionCookie)
		if err != nil || !s.sessions[c.Value] {
			v1Error(w, http.StatusUnauthorized, "session cookie required")
			return false
		}
	}
	if !s.cfg.tokenChecks && s.cfg.user == "" {
		return true
	}
	sig, trepo, access, ok := parseV1Token(r.Header.Get("Authorization"))
	tokenOK := ok && s.tokens[sig] == trepo && (access == "read" || access == "write")
	if tokenOK {
		if repo != "" && trepo != repo {
			tokenOK = false
		}
		if image != "" {
			if rp := s.repos[trepo]; rp == nil || !rp.images[image] {
				// The token names another repository: docker's registry
				// answers as if the image did not exist for it.
				tokenOK = false
			}
		}
	}
	if tokenOK {
		return true
	}
	if !s.cfg.tokenChecks && s.basicOK(r) {
		return true
	}
	if s.cfg.tokenChecks {
		w.Header().Set("WWW-Authenticate", "Token")
	} else {
		w.Header().Set("WWW-Authenticate", `Basic realm="regfs v1 registry"`)
	}
	v1Error(w, http.StatusUnauthorized, "requires authorization")
	return false
}

func (s *V1Server) serveTags(w http.ResponseWriter, r *http.Request, repo, tag string, one bool) {
	if !s.authorize(w, r, repo, "") {
		return
	}
	s.mu.Lock()
	rp, ok := s.repos[repo]
	var tags map[string]string
	if ok {
		tags = make(map[string]string, len(rp.tags))
		for k, v := range rp.tags {
			tags[k] = v
		}
	}
	s.mu.Unlock()
	if !ok {
		v1Error(w, http.StatusNotFound, "repository not found")
		return
	}
	if !one {
		v1JSON(w, tags)
		return
	}
	id, ok := tags[tag]
	if !ok {
		v1Error(w, http.StatusNotFound, "tag not found")
		return
	}
	v1JSON(w, id)
}

func (s *V1Server) serveImage(w http.ResponseWriter, r *http.Request, route, id string) {
	s.mu.Lock()
	img := s.images[id]
	s.mu.Unlock()
	if img == nil {
		// 401 before 404 would leak nothing either way; docker's registry
		// checks the token first, so do the same.
		if !s.authorize(w, r, "", "") {
			return
		}
		v1Error(w, http.StatusNotFound, "image not found")
		return
	}
	if !s.authorize(w, r, "", id) {
		return
	}
	switch route {
	case "json":
		if !s.cfg.noSize {
			w.Header().Set("X-Docker-Size", strconv.Itoa(len(img.Layer)))
		}
		w.Header().Set("X-Docker-Checksum", img.Checksum)
		w.Header().Set("X-Docker-Payload-Checksum", img.PayloadChecksum)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(img.JSON)))
		w.Write(img.JSON) //nolint:errcheck
	case "ancestry":
		var ids []string
		s.mu.Lock()
		for cur := img; cur != nil; cur = s.images[cur.Parent] {
			ids = append(ids, cur.ID)
			if cur.Parent == "" {
				break
			}
		}
		s.mu.Unlock()
		v1JSON(w, ids)
	case "layer":
		s.mu.Lock()
		redirect := s.redirect
		s.mu.Unlock()
		if redirect != "" {
			http.Redirect(w, r, redirect+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		s.serveLayer(w, r, img)
	}
}

func (s *V1Server) serveLayer(w http.ResponseWriter, r *http.Request, img *V1Image) {
	size := int64(len(img.Layer))
	start, end := int64(0), size // [start, end)
	status := http.StatusOK
	w.Header().Set("Content-Type", "application/octet-stream")
	if !s.cfg.noRanges {
		w.Header().Set("Accept-Ranges", "bytes")
		if rh := r.Header.Get("Range"); rh != "" {
			a, b, verdict := parseV1Range(rh, size)
			switch verdict {
			case v1RangeOK:
				start, end, status = a, b, http.StatusPartialContent
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b-1, size))
			case v1RangeUnsatisfiable:
				w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
				v1Error(w, http.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
				return
			}
		}
	}
	w.Header().Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body := img.Layer[start:end]
	if f := s.matchFault(r, true); f != nil && f.CutAfter < int64(len(body)) {
		s.addLayerOut(f.CutAfter)
		w.Write(body[:f.CutAfter]) //nolint:errcheck // the client may be gone
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		v1Stall(r, f.Stall)
		// Dropping the connection mid-body is the fault under test.
		panic(http.ErrAbortHandler)
	}
	// Counted before writing, so a client that has its bytes sees them counted.
	s.addLayerOut(int64(len(body)))
	w.Write(body) //nolint:errcheck // the client may be gone
}

// v1Stall waits d, or until the client has gone away.
func v1Stall(r *http.Request, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func (s *V1Server) addLayerOut(n int64) {
	s.mu.Lock()
	s.layerOut += n
	s.mu.Unlock()
}

type v1RangeVerdict int

const (
	v1RangeIgnore v1RangeVerdict = iota // malformed or multi-range: serve the whole body
	v1RangeOK
	v1RangeUnsatisfiable
)

// parseV1Range reads a single "bytes=a-b", "bytes=a-" or "bytes=-n" range
// (RFC 9110 §14) and returns [start, end).
func parseV1Range(h string, size int64) (int64, int64, v1RangeVerdict) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, v1RangeIgnore
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, v1RangeIgnore
	}
	if a == "" { // suffix range
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, v1RangeIgnore
		}
		if n == 0 || size == 0 {
			return 0, 0, v1RangeUnsatisfiable
		}
		if n > size {
			n = size
		}
		return size - n, size, v1RangeOK
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, v1RangeIgnore
	}
	end := size
	if b != "" {
		last, err := strconv.ParseInt(b, 10, 64)
		if err != nil || last < start {
			return 0, 0, v1RangeIgnore
		}
		if last+1 < end {
			end = last + 1
		}
	}
	if start >= size {
		return 0, 0, v1RangeUnsatisfiable
	}
	return start, end, v1RangeOK
}

// V1SearchResult is one entry of a search answer.
type V1SearchResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	StarCount   int    `json:"star_count"`
	IsOfficial  bool   `json:"is_official"`
	IsAutomated bool   `json:"is_automated"`
}

// V1SearchResponse is the body of GET /v1/search.
type V1SearchResponse struct {
	Query      string           `json:"query"`
	NumResults int              `json:"num_results"`
	NumPages   int              `json:"num_pages"`
	Page       int              `json:"page"`
	PageSize   int              `json:"page_size"`
	Results    []V1SearchResult `json:"results"`
}

func (s *V1Server) serveSearch(w http.ResponseWriter, r *http.Request) {
	if s.cfg.noSearch {
		v1Error(w, http.StatusNotFound, "search not available")
		return
	}
	q := r.URL.Query().Get("q")
	pageSize := 25
	if n := r.URL.Query().Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 || v > 100 {
			v1Error(w, http.StatusBadRequest, "n must be within [1, 100]")
			return
		}
		pageSize = v
	}
	page := 1
	if p := r.URL.Query().Get("page"); p != "" {
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 {
			v1Error(w, http.StatusBadRequest, "page must be >= 1")
			return
		}
		page = v
	}
	lq := strings.ToLower(q)
	var all []V1SearchResult
	s.mu.Lock()
	for name, rp := range s.repos {
		if lq == "" || strings.Contains(name, lq) || strings.Contains(strings.ToLower(rp.description), lq) {
			all = append(all, V1SearchResult{
				Name: name, Description: rp.description,
				IsOfficial: strings.HasPrefix(name, "library/"),
			})
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	resp := V1SearchResponse{
		Query: q, NumResults: len(all), Page: page, PageSize: pageSize,
		NumPages: (len(all) + pageSize - 1) / pageSize,
		Results:  []V1SearchResult{},
	}
	if lo := (page - 1) * pageSize; lo < len(all) {
		resp.Results = all[lo:min(lo+pageSize, len(all))]
	}
	v1JSON(w, resp)
}

// v1TarSum is the layer's tarsum (Version0, SHA256, the image JSON as
// extra), as docker's v1 push computed it for the index's checksum list.
// Sums are cached by content: tests build the same fixtures many times.
func v1TarSum(layer, js []byte) (string, error) {
	h := sha256.New()
	h.Write(layer)
	h.Write([]byte{0})
	h.Write(js)
	key := string(h.Sum(nil))
	if sum, ok := v1TarSums.Load(key); ok {
		return sum.(string), nil
	}
	sum, err := tarsum.Compute(context.Background(), bytes.NewReader(layer), tarsum.Options{Version: tarsum.Version0}, js)
	if err != nil {
		return "", fmt.Errorf("tarsum: %w", err)
	}
	v1TarSums.Store(key, sum)
	return sum, nil
}

var v1TarSums sync.Map // sha256(layer, 0, json) → tarsum
