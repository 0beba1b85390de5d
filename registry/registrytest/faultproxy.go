package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is one programmed misbehaviour of a FaultProxy. A request gets at
// most one fault: the first added fault whose Match accepts it and whose
// turn it is (see Every and Times).
type Fault struct {
	// Match selects the requests the fault considers; nil means all.
	Match func(*http.Request) bool
	// Every applies the fault to every Every-th matching request (the
	// Every-th, 2·Every-th, …). 0 or 1: each matching request.
	Every int
	// Times is how many requests the fault is applied to before it is
	// spent; 0 means no limit.
	Times int

	// What the fault does; set one (Stall… may be combined with CutAfter).

	// Status answers with this status (and a registry-style JSON error
	// body) without asking the upstream.
	Status int
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string
	// CutAfter forwards the response but closes the connection after this
	// many body bytes (the declared Content-Length stays, so the client
	// sees an unexpected EOF). Use 0 with Cut set for "no body at all".
	CutAfter int64
	Cut      bool
	// StallHeaders waits this long before forwarding the request (the
	// client waits for headers).
	StallHeaders time.Duration
	// StallBody waits this long after StallAt body bytes (flushed first).
	StallBody time.Duration
	StallAt   int64
	// Drop closes the connection without any answer.
	Drop bool
	// IgnoreRange removes the request's Range header, so the upstream
	// answers 200 with the whole body.
	IgnoreRange bool
}

// FaultHandle is an added fault, to count its hits and remove it.
type FaultHandle struct {
	f    Fault
	seen atomic.Int64 // matching requests considered
	hits atomic.Int64 // requests the fault was applied to
	gone atomic.Bool
}

// Hits is the number of requests the fault was applied to.
func (h *FaultHandle) Hits() int { return int(h.hits.Load()) }

// Remove switches the fault off.
func (h *FaultHandle) Remove() { h.gone.Store(true) }

// take reports whether the fault applies to this matching request, and
// counts it.
func (h *FaultHandle) take() bool {
	if h.gone.Load() {
		return false
	}
	n := h.seen.Add(1)
	if h.f.Every > 1 && n%int64(h.f.Every) != 0 {
		return false
	}
	if h.f.Times > 0 {
		if h.hits.Add(1) > int64(h.f.Times) {
			h.hits.Add(-1)
			return false
		}
		return true
	}
	h.hits.Add(1)
	return true
}

// FaultProxy is an HTTP proxy on 127.0.0.1 in front of a registry that
// misbehaves on demand. It keeps the client's Host header when forwarding
// (so the registry's upload locations and token realm name the proxy),
// passes redirects through unfollowed, and never adds compression. All
// methods are safe for concurrent use.
type FaultProxy struct {
	// Host is "127.0.0.1:port" and URL "http://" + Host.
	Host, URL string
	// Upstream is the registry's URL.
	Upstream *url.URL

	listener  *dropListener
	server    *http.Server
	served    chan struct{}
	transport *http.Transport
	counter   *requestCounter

	mu     sync.Mutex
	faults []*FaultHandle

	// Blob redirect mode.
	storage *blobStorage
}

// StartFaultProxy starts a proxy to upstreamURL (e.g. reg.URL) and closes
// it in t.Cleanup.
func StartFaultProxy(t testing.TB, upstreamURL string) *FaultProxy {
	t.Helper()
	p, err := NewFaultProxy(upstreamURL)
	if err != nil {
		t.Fatalf("start fault proxy: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close fault proxy: %v", err)
		}
	})
	return p
}

// NewFaultProxy starts a proxy to upstreamURL; Close stops it.
func NewFaultProxy(upstreamURL string) (*FaultProxy, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fault proxy: bad upstream URL %q", upstreamURL)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy: listen: %w", err)
	}
	p := &FaultProxy{
		Upstream:  u,
		listener:  &dropListener{Listener: l},
		served:    make(chan struct{}),
		transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
		counter:   newRequestCounter(),
	}
	p.Host = l.Addr().String()
	p.URL = "http://" + p.Host
	p.server = &http.Server{
		Handler: p.counter.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.serveProxy(w, r, false)
		})),
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() {
		defer close(p.served)
		_ = p.server.Serve(p.listener)
	}()
	return p, nil
}

// Close stops the proxy (and its blob storage listener), closing open
// connections.
func (p *FaultProxy) Close() error {
	err := p.server.Close()
	<-p.served
	p.mu.Lock()
	st := p.storage
	p.mu.Unlock()
	if st != nil {
		err = errors.Join(err, st.close())
	}
	p.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close fault proxy: %w", err)
	}
	return nil
}

// Add programs a fault and returns its handle.
func (p *FaultProxy) Add(f Fault) *FaultHandle {
	h := &FaultHandle{f: f}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, h)
	return h
}

// Clear removes every fault (connection dropping included).
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.faults {
		h.Remove()
	}
	p.faults = nil
	p.listener.every.Store(0)
}

// CutBody cuts the next times matching responses (0: all) after n body
// bytes.
func (p *FaultProxy) CutBody(n int64, times int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Times: times, Cut: true, CutAfter: n})
}

// CutBodyEvery cuts every k-th matching response after n body bytes.
func (p *FaultProxy) CutBodyEvery(n int64, k int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Every: k, Cut: true, CutAfter: n})
}

// FailStatus answers the next times matching requests (0: all) with
// status, and a Retry-After header when retryAfter is not "".
func (p *FaultProxy) FailStatus(status int, retryAfter string, times int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Times: times, Status: status, RetryAfter: retryAfter})
}

// StallHeaders delays the next times matching requests (0: all) by d
// before forwarding them.
func (p *FaultProxy) StallHeaders(d time.Duration, times int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Times: times, StallHeaders: d})
}

// StallBody pauses the next times matching responses (0: all) for d after
// n body bytes.
func (p *FaultProxy) StallBody(n int64, d time.Duration, times int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Times: times, StallAt: n, StallBody: d})
}

// DropRequests closes the connection of every k-th matching request
// without an answer.
func (p *FaultProxy) DropRequests(k int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Every: k, Drop: true})
}

// IgnoreRange makes the next times matching requests (0: all) lose their
// Range header, so they are answered 200 with the whole body.
func (p *FaultProxy) IgnoreRange(times int, match func(*http.Request) bool) *FaultHandle {
	return p.Add(Fault{Match: match, Times: times, IgnoreRange: true})
}

// DropEveryConnection closes every k-th accepted TCP connection at once,
// before any request is read (k <= 0: off).
func (p *FaultProxy) DropEveryConnection(k int) {
	p.listener.every.Store(int64(k))
}

// DroppedConnections is the number of connections closed by
// DropEveryConnection.
func (p *FaultProxy) DroppedConnections() int { return int(p.listener.dropped.Load()) }

// Stats returns the proxy's counters (requests as received, body bytes
// written to clients; blob-storage requests of the redirect mode included).
func (p *FaultProxy) Stats() Stats { return p.counter.stats() }

// Requests returns the proxy's request log.
func (p *FaultProxy) Requests() []Request { return p.counter.requests() }

// ResetStats zeroes the counters and the request log.
func (p *FaultProxy) ResetStats() { p.counter.reset() }

// Request predicates for faults.

var blobPathRE = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9]+:[a-f0-9]+$`)

// BlobGETs matches GET requests for blobs (at the registry or, in the
// redirect mode, at the storage listener).
func BlobGETs(r *http.Request) bool {
	return r.Method == http.MethodGet && (blobPathRE.MatchString(r.URL.Path) || strings.HasPrefix(r.URL.Path, storagePrefix))
}

// ManifestRequests matches requests for manifests.
func ManifestRequests(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }

// PathContains matches requests whose path contains s.
func PathContains(s string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.Contains(r.URL.Path, s) }
}

// Not inverts a predicate (nil means all, so Not(nil) matches none).
func Not(match func(*http.Request) bool) func(*http.Request) bool {
	return func(r *http.Request) bool { return match != nil && !match(r) }
}

// pickFault returns the fault for r, if any.
func (p *FaultProxy) pickFault(r *http.Request) *Fault {
	p.mu.Lock()
	faults := append([]*FaultHandle(nil), p.faults...)
	p.mu.Unlock()
	for _, h := range faults {
		if h.f.Match != nil && !h.f.Match(r) {
			continue
		}
		if h.take() {
			return &h.f
		}
	}
	return nil
}

// hopHeaders are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// serveProxy answers a request to the proxy, or (storage) to the blob
// storage listener of the redirect mode.
func (p *FaultProxy) serveProxy(w http.ResponseWriter, r *http.Request, storage bool) {
	if storage != strings.HasPrefix(r.URL.Path, storagePrefix) {
		http.NotFound(w, r)
		return
	}
	f := p.pickFault(r)
	if f != nil && f.StallHeaders > 0 && !sleepCtx(r.Context(), f.StallHeaders) {
		return
	}
	if f != nil && f.Drop {
		dropConnection(w)
		return
	}
	if f != nil && f.Status != 0 {
		writeFaultStatus(w, r, f)
		return
	}
	if storage {
		p.serveStorage(w, r, f)
		return
	}
	if p.redirecting() && r.Method == http.MethodGet && blobPathRE.MatchString(r.URL.Path) {
		p.redirectBlob(w, r)
		return
	}
	target := *p.Upstream
	target.Path, target.RawPath = r.URL.Path, r.URL.RawPath
	target.RawQuery = r.URL.RawQuery
	p.forward(w, r, &target, r.Header, f)
}

// forward sends r (with header) to target, keeping r.Host, and relays the
// answer under fault f.
func (p *FaultProxy) forward(w http.ResponseWriter, r *http.Request, target *url.URL, header http.Header, f *Fault) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, target.String(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if r.Body == http.NoBody || r.ContentLength == 0 {
		out.Body = nil
	}
	out.ContentLength = r.ContentLength
	out.Header = header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Host = r.Host
	if f != nil && f.IgnoreRange {
		out.Header.Del("Range")
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		if r.Context().Err() == nil {
			http.Error(w, "fault proxy: upstream: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	relayResponse(w, r, resp, f)
}

// relayResponse writes resp to w, applying f's body faults.
func relayResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, f *Fault) {
	for k, vs := range resp.Header {
		w.Header()[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	if resp.ContentLength >= 0 && r.Method != http.MethodHead {
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	limit := int64(-1)
	if f != nil && f.Cut {
		limit = f.CutAfter
	}
	stallAt := int64(-1)
	if f != nil && f.StallBody > 0 {
		stallAt = f.StallAt
	}
	var written int64
	buf := make([]byte, 32<<10)
	for {
		chunk := buf
		if limit >= 0 && int64(len(chunk)) > limit-written {
			chunk = chunk[:limit-written]
		}
		if stallAt >= written && int64(len(chunk)) > stallAt-written {
			chunk = chunk[:stallAt-written]
		}
		if stallAt == written {
			_ = rc.Flush()
			if !sleepCtx(r.Context(), f.StallBody) {
				return
			}
			stallAt = -1
			continue
		}
		if limit >= 0 && written >= limit {
			_ = rc.Flush()
			// Abort: the server closes the connection mid-body.
			panic(http.ErrAbortHandler)
		}
		n, err := resp.Body.Read(chunk)
		if n > 0 {
			if _, werr := w.Write(chunk[:n]); werr != nil {
				return
			}
			written += int64(n)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}
}

func writeFaultStatus(w http.ResponseWriter, r *http.Request, f *Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"fault proxy: injected status %d"}]}`+"\n", f.Status)
	}
}

// dropConnection closes the client connection without a response.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// sleepCtx sleeps d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dropListener closes every k-th accepted connection at once.
type dropListener struct {
	net.Listener
	every    atomic.Int64
	accepted atomic.Int64
	dropped  atomic.Int64
}

func (l *dropListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.accepted.Add(1)
		if k := l.every.Load(); k > 0 && n%k == 0 {
			l.dropped.Add(1)
			_ = c.Close()
			continue
		}
		return c, nil
	}
}

// Blob redirect mode: blob GETs are answered 307 to a second listener, as
// registries backed by object storage do.

// storagePrefix starts the path of redirected blob URLs.
const storagePrefix = "/storage/"

// blobStorage is the second listener of the redirect mode: it serves
// /storage/<id>/<digest> by fetching the blob from the upstream with the
// credentials of the request that was redirected (kept server-side, like a
// pre-signed URL), and records whether clients sent it an Authorization
// header, which they must not.
type blobStorage struct {
	// host is the advertised host:port of the listener.
	host     string
	listener net.Listener
	server   *http.Server
	served   chan struct{}

	mu       sync.Mutex
	grants   map[string]storageGrant
	authSeen int
	requests int
}

type storageGrant struct {
	path   string
	header http.Header
}

// EnableBlobRedirect switches the redirect mode on: the proxy checks each
// blob GET with a HEAD to the upstream (so auth challenges pass through
// unchanged), and on success answers 307 to a second listener on
// 127.0.0.1:<another port>, advertised as hostname:<port> (hostname
// "127.0.0.1" when ""; "localhost" gives a different host name as well as
// a different port). It returns that host:port.
func (p *FaultProxy) EnableBlobRedirect(hostname string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.storage != nil {
		return p.storage.host, nil
	}
	if hostname == "" {
		hostname = "127.0.0.1"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("blob storage listener: %w", err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	st := &blobStorage{
		host:     net.JoinHostPort(hostname, port),
		listener: l,
		served:   make(chan struct{}),
		grants:   map[string]storageGrant{},
	}
	// Storage requests go through the same counting and faults.
	st.server = &http.Server{Handler: p.counter.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.note(r)
		p.serveProxy(w, r, true)
	})), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(st.served)
		_ = st.server.Serve(l)
	}()
	p.storage = st
	return st.host, nil
}

// StorageAuthorizationSeen is the number of requests that reached the blob
// storage listener with an Authorization header (they should be 0).
func (p *FaultProxy) StorageAuthorizationSeen() int {
	st := p.storageServer()
	if st == nil {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.authSeen
}

// RevokeStorageGrants makes every storage URL handed out so far answer 403,
// as an expired signed URL does; new redirects get new ones.
func (p *FaultProxy) RevokeStorageGrants() {
	st := p.storageServer()
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.grants = map[string]storageGrant{}
}

// StorageRequests is the number of requests the blob storage listener got.
func (p *FaultProxy) StorageRequests() int {
	st := p.storageServer()
	if st == nil {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.requests
}

func (p *FaultProxy) storageServer() *blobStorage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storage
}

func (p *FaultProxy) redirecting() bool { return p.storageServer() != nil }

func (st *blobStorage) note(r *http.Request) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.requests++
	if r.Header.Get("Authorization") != "" {
		st.authSeen++
	}
}

func (st *blobStorage) close() error {
	err := st.server.Close()
	<-st.served
	return err
}

// redirectBlob answers a blob GET with 307 to the storage listener, after
// the upstream has accepted a HEAD with the same credentials.
func (p *FaultProxy) redirectBlob(w http.ResponseWriter, r *http.Request) {
	st := p.storageServer()
	target := *p.Upstream
	target.Path, target.RawQuery = r.URL.Path, ""
	head, err := http.NewRequestWithContext(r.Context(), http.MethodHead, target.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	head.Header = r.Header.Clone()
	head.Header.Del("Range")
	head.Host = r.Host
	resp, err := p.transport.RoundTrip(head)
	if err != nil {
		http.Error(w, "fault proxy: upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		return
	}
	var idb [12]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	st.mu.Lock()
	st.grants[id] = storageGrant{path: r.URL.Path, header: r.Header.Clone()}
	st.mu.Unlock()
	digest := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	w.Header().Set("Location", "http://"+st.host+storagePrefix+id+"/"+digest)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// serveStorage serves a redirected blob from the upstream with the granted
// credentials and the client's Range.
func (p *FaultProxy) serveStorage(w http.ResponseWriter, r *http.Request, f *Fault) {
	st := p.storageServer()
	if st == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, storagePrefix), "/")
	st.mu.Lock()
	g, ok := st.grants[id]
	st.mu.Unlock()
	if !ok {
		http.Error(w, "no such grant", http.StatusForbidden)
		return
	}
	header := g.header.Clone()
	header.Del("Range")
	if rg := r.Header.Get("Range"); rg != "" {
		header.Set("Range", rg)
	}
	target := *p.Upstream
	target.Path, target.RawQuery = g.path, ""
	// Ask the upstream as the proxy itself, not as the storage host.
	r2 := r.Clone(r.Context())
	r2.Host = p.Host
	p.forward(w, r2, &target, header, f)
}
