package registrytest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ServeHTTP routes one request. The routes (GET only: the API is read-only
// here) and what they answer:
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
