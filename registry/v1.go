package registry

// The Docker Registry v1 client, after docker's old registry/session.go and
// the v1 registry and index API documents:
//
//   - the index (the host the client was made for) answers
//     GET /v1/repositories/<ns>/<repo>/images with "X-Docker-Token: true":
//     the image list with checksums, a token (X-Docker-Token), the registry
//     endpoints that hold the repository (X-Docker-Endpoints) and a session
//     cookie, kept in the client's jar;
//   - the endpoints answer tags, image JSON, ancestry and layers, given
//     "Authorization: Token <token>"; a connection error or 5xx on one
//     endpoint moves on to the next, and the endpoint that answered last is
//     tried first next time;
//   - a 401 from an endpoint means the token expired: the handshake is done
//     again once.
//
// One-component names get "library/", as docker did.

import (
	"github.com/regfs/regfs/blobio"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regfs/regfs/tarsum"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// maxV1JSON bounds the JSON bodies the v1 client reads (lists, image JSON).
const maxV1JSON = 32 << 20

var (
	v1IDPattern  = regexp.MustCompile(`^[a-f0-9]{64}$`)
	v1TagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	// v1RepoComponent is docker's path-component grammar, lower case.
	v1RepoComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$`)
)

// V1Ping is what GET /v1/_ping says about a v1 registry.
type V1Ping struct {
	Version    string // X-Docker-Registry-Version
	Standalone bool   // X-Docker-Registry-Standalone: true or 1
}

// V1SearchResult is one repository found by GET /v1/search.
type V1SearchResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	StarCount   int    `json:"star_count"`
	IsOfficial  bool   `json:"is_official"`
	IsAutomated bool   `json:"is_automated"`
}

// v1Client is a Client for the Docker Registry v1 API.
type v1Client struct {
	host  string // index host[:port]
	index string // "scheme://host/v1/"
	hc    *http.Client
	opts  v1Options
	log   *logrus.Entry
	// ranges remembers whether the endpoints honour Range (rangeUnknown,
	// rangeHonoured, rangeIgnored), for resumableReader.
	ranges atomic.Int32

	mu       sync.Mutex
	sessions map[string]*v1Session // by normalized repository
}

var _ Client = (*v1Client)(nil)

// v1Session is what the index handshake gave for one repository.
type v1Session struct {
	repo      string            // normalized ns/repo
	token     string            // "Token …" for Authorization; "" when the index gave none
	endpoints []string          // base URLs, "scheme://host/v1/", in the index's order
	checksums map[string]string // image id → checksum from the images list
	good      atomic.Int64      // index into endpoints of the one that answered last
}

// newV1Client makes a v1 client for the index at host ("host[:port]"). It
// does no I/O.
func newV1Client(host string, opts v1Options) (*v1Client, error) {
	if host == "" || strings.ContainsAny(host, "/ ") || strings.Contains(host, "://") {
		return nil, fmt.Errorf("v1 client: bad registry host %q: want host[:port]", host)
	}
	scheme := "https"
	if opts.PlainHTTP || isLoopbackHost(host) {
		scheme = "http"
	}
	opts = opts.withDefaults()
	tr := opts.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, fmt.Errorf("v1 client: cookie jar: %w", err)
	}
	return &v1Client{
		host:     host,
		index:    scheme + "://" + host + "/v1/",
		hc:       &http.Client{Transport: tr, Jar: jar, CheckRedirect: v1CheckRedirect},
		opts:     opts,
		log:      opts.Logger.WithField("registry", host),
		sessions: map[string]*v1Session{},
	}, nil
}

// v1CheckRedirect follows up to 10 redirects (layers may live on a storage
// host) and never sends the registry's Authorization to another host:port.
// Go's own rule would keep it for the same hostname on any port and for
// subdomains.
func v1CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}

func (c *v1Client) Host() string { return c.host }
func (c *v1Client) API() string  { return APIV1 }

// v1RepoPath normalizes repo for the wire: "library/" for one component,
// each component checked against docker's grammar.
func v1RepoPath(repo string) (string, error) {
	r := strings.Trim(repo, "/")
	if !strings.Contains(r, "/") {
		r = "library/" + r
	}
	for _, comp := range strings.Split(r, "/") {
		if !v1RepoComponent.MatchString(comp) {
			return "", fmt.Errorf("repository %q: bad path component %q (lower-case letters, digits, separators)", repo, comp)
		}
	}
	return r, nil
}

// v1StatusErr consumes and closes resp and describes it as an *HTTPError
// (which matches ErrNotFound for 404, ErrUnauthorized for 401 and 403).
func v1StatusErr(what string, resp *http.Response) error {
	return fmt.Errorf("%s: %w", what, newHTTPError(resp))
}

// get sends GET base+path to each base in turn, starting at start, for up to
// 1+MaxRetries rounds with capped, jittered back-off between rounds (at
// least the servers' Retry-After). A connection error, a stall, 5xx, 408 or
// 429 moves on to the next base; any other answer is returned with the
// index of the base that gave it, for the caller to judge. A round in which
// no failure was temporary (TLS verification, say) is not repeated.
func (c *v1Client) get(ctx context.Context, what string, bases []string, start int, path string, prep func(*http.Request)) (*http.Response, int, error) {
	if len(bases) == 0 {
		return nil, 0, fmt.Errorf("%s: no endpoints", what)
	}
	var lastErr error
	rounds := 1 + c.opts.MaxRetries
	for round := 0; round < rounds; round++ {
		var wait time.Duration
		temporary := false
		for k := range bases {
			i := (start + k) % len(bases)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, bases[i]+path, nil)
			if err != nil {
				return nil, 0, fmt.Errorf("%s: %w", what, err)
			}
			req.Header.Set("User-Agent", c.opts.UserAgent)
			req.Header.Set("Accept", "application/json")
			if prep != nil {
				prep(req)
			}
			resp, err := c.send(ctx, req)
			if err != nil {
				if cerr := ctx.Err(); cerr != nil {
					return nil, 0, fmt.Errorf("%s: %w", what, cerr)
				}
				temporary = temporary || IsTemporary(err)
				lastErr = err
				c.log.WithError(err).Debugf("%s: endpoint %s failed", what, bases[i])
				continue
			}
			if retryableStatus(resp.StatusCode) {
				he := newHTTPError(resp)
				if he.RetryAfter > c.opts.RetryAfterMax {
					return nil, 0, fmt.Errorf("%s: server asks to retry after %v, longer than %v: %w", what, he.RetryAfter, c.opts.RetryAfterMax, he)
				}
				wait = max(wait, he.RetryAfter)
				temporary = true
				lastErr = he
				c.log.WithError(he).Debugf("%s: endpoint %s failed", what, bases[i])
				continue
			}
			return resp, i, nil
		}
		if round == rounds-1 || !temporary {
			break
		}
		d := c.opts.RetryBase
		for j := 0; j < round && d < c.opts.RetryMax; j++ {
			d *= 2
		}
		d = time.Duration(float64(min(d, c.opts.RetryMax)) * (0.8 + 0.4*rand.Float64()))
		if err := sleepCtx(ctx, max(wait, d)); err != nil {
			return nil, 0, fmt.Errorf("%s: %w (last error: %v)", what, err, lastErr)
		}
	}
	return nil, 0, fmt.Errorf("%s: %d endpoint(s) failed, %d round(s): %w", what, len(bases), rounds, lastErr)
}

// send makes one attempt under the stall watchdog: no response headers, or
// no bytes during a body Read, within RequestTimeout cancels the attempt
// with an error that wraps errStalled (a temporary error: the next endpoint
// is tried, or a layer stream resumes). Time between Reads is the caller's.
func (c *v1Client) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req = req.WithContext(rctx)
	timeout := c.opts.RequestTimeout
	if timeout < 0 {
		resp, err := c.hc.Do(req)
		if err != nil {
			cancel(nil)
			return nil, err
		}
		resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel}
		return resp, nil
	}
	stall := &stalledError{timeout: timeout}
	timer := time.AfterFunc(timeout, func() { cancel(stall) })
	resp, err := c.hc.Do(req)
	timer.Stop()
	if err != nil {
		if errors.Is(context.Cause(rctx), errStalled) && ctx.Err() == nil {
			err = fmt.Errorf("GET %s: %w", redactURL(req.URL), stall)
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel, timer: timer, timeout: timeout}
	return resp, nil
}

func (c *v1Client) setBasic(req *http.Request) {
	if c.opts.Username != "" || c.opts.Password != "" {
		req.SetBasicAuth(c.opts.Username, c.opts.Password)
	}
}

// Ping asks the index whether it speaks v1.
func (c *v1Client) Ping(ctx context.Context) (V1Ping, error) {
	what := "v1 ping " + c.host
	resp, _, err := c.get(ctx, what, []string{c.index}, 0, "_ping", nil)
	if err != nil {
		return V1Ping{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return V1Ping{}, v1StatusErr(what, resp)
	}
	defer drain(resp)
	p := V1Ping{Version: resp.Header.Get("X-Docker-Registry-Version")}
	switch strings.ToLower(resp.Header.Get("X-Docker-Registry-Standalone")) {
	case "true", "1":
		p.Standalone = true
	case "":
		// Older registries say it in the body: {"standalone": true}.
		var body struct {
			Standalone bool `json:"standalone"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body) == nil {
			p.Standalone = body.Standalone
		}
	}
	return p, nil
}

// session returns the handshake result for repo, doing the handshake when
// there is none or when the cached one is stale (the one a 401 came with).
func (c *v1Client) session(ctx context.Context, repo string, stale *v1Session) (*v1Session, error) {
	c.mu.Lock()
	cur := c.sessions[repo]
	c.mu.Unlock()
	if cur != nil && cur != stale {
		return cur, nil
	}
	s, err := c.handshake(ctx, repo)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.sessions[repo] = s
	c.mu.Unlock()
	return s, nil
}

// handshake is GET /v1/repositories/<repo>/images with X-Docker-Token: true.
func (c *v1Client) handshake(ctx context.Context, repo string) (*v1Session, error) {
	what := fmt.Sprintf("v1 images of %s/%s", c.host, repo)
	resp, _, err := c.get(ctx, what, []string{c.index}, 0, "repositories/"+repo+"/images", func(r *http.Request) {
		r.Header.Set("X-Docker-Token", "true")
		c.setBasic(r)
	})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, v1StatusErr(what, resp)
	}
	defer drain(resp)
	var list []struct {
		ID       string `json:"id"`
		Checksum string `json:"checksum"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxV1JSON)).Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: decode image list: %w", what, err)
	}
	s := &v1Session{repo: repo, checksums: make(map[string]string, len(list))}
	for _, im := range list {
		s.checksums[im.ID] = im.Checksum
	}
	if toks := resp.Header.Values("X-Docker-Token"); len(toks) > 0 {
		s.token = "Token " + strings.Join(toks, ",")
	}
	scheme := strings.SplitN(c.index, "://", 2)[0]
	for _, v := range resp.Header.Values("X-Docker-Endpoints") {
		for _, ep := range strings.Split(v, ",") {
			ep = strings.TrimSpace(ep)
			if ep == "" {
				continue
			}
			if strings.ContainsAny(ep, "/ ?#@") {
				return nil, fmt.Errorf("%s: bad endpoint %q in X-Docker-Endpoints", what, ep)
			}
			s.endpoints = append(s.endpoints, scheme+"://"+ep+"/v1/")
		}
	}
	if len(s.endpoints) == 0 {
		// No endpoints listed: the index is the registry too.
		s.endpoints = []string{c.index}
	}
	return s, nil
}

// endpointGet sends GET <endpoint>/v1/<path> for repo with its token (or
// Basic credentials when the index gave no token), failing over across the
// endpoints. A 401 redoes the handshake once. Any status other than a
// retryable one is returned for the caller to judge.
func (c *v1Client) endpointGet(ctx context.Context, repo, what, path string, prep func(*http.Request)) (*http.Response, error) {
	s, err := c.session(ctx, repo, nil)
	if err != nil {
		return nil, err
	}
	for refreshed := false; ; refreshed = true {
		resp, i, err := c.get(ctx, what, s.endpoints, int(s.good.Load()), path, func(r *http.Request) {
			if s.token != "" {
				r.Header.Set("Authorization", s.token)
			} else {
				c.setBasic(r)
			}
			if prep != nil {
				prep(r)
			}
		})
		if err != nil {
			return nil, err
		}
		s.good.Store(int64(i))
		if resp.StatusCode == http.StatusUnauthorized && !refreshed {
			drain(resp)
			if s, err = c.session(ctx, repo, s); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

// endpointJSON GETs path from repo's endpoints and decodes a 200 answer into v.
func (c *v1Client) endpointJSON(ctx context.Context, repo, what, path string, v any) (http.Header, []byte, error) {
	resp, err := c.endpointGet(ctx, repo, what, path, nil)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, v1StatusErr(what, resp)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxV1JSON+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read body: %w", what, err)
	}
	if len(b) > maxV1JSON {
		return nil, nil, fmt.Errorf("%s: body larger than %d bytes", what, maxV1JSON)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, nil, fmt.Errorf("%s: decode: %w", what, err)
		}
	}
	return resp.Header, b, nil
}

// tagMap is GET /v1/repositories/<repo>/tags.
func (c *v1Client) tagMap(ctx context.Context, repo string) (map[string]string, error) {
	rp, err := v1RepoPath(repo)
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	what := fmt.Sprintf("v1 tags of %s/%s", c.host, rp)
	if _, _, err := c.endpointJSON(ctx, rp, what, "repositories/"+rp+"/tags", &tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// Tags lists repo's tags, sorted.
func (c *v1Client) Tags(ctx context.Context, repo string) ([]string, error) {
	m, err := c.tagMap(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(m))
	for t := range m {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	return tags, nil
}

// Search lists every repository GET /v1/search?q= finds, all pages.
func (c *v1Client) Search(ctx context.Context, q string) ([]V1SearchResult, error) {
	const pageSize = 100
	what := fmt.Sprintf("v1 search %s for %q", c.host, q)
	var out []V1SearchResult
	seen := map[string]bool{}
	for page := 1; page <= 10000; page++ {
		path := "search?q=" + url.QueryEscape(q) + "&n=" + strconv.Itoa(pageSize) + "&page=" + strconv.Itoa(page)
		resp, _, err := c.get(ctx, what, []string{c.index}, 0, path, c.setBasic)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, v1StatusErr(what, resp)
		}
		var body struct {
			NumPages int              `json:"num_pages"`
			Results  []V1SearchResult `json:"results"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxV1JSON)).Decode(&body)
		drain(resp)
		if err != nil {
			return nil, fmt.Errorf("%s: decode page %d: %w", what, page, err)
		}
		added := 0
		for _, r := range body.Results {
			if !seen[r.Name] {
				seen[r.Name] = true
				out = append(out, r)
				added++
			}
		}
		// Stop at the last page, and also when a server ignores "page"
		// and sends the same results again.
		if page >= body.NumPages || added == 0 {
			break
		}
	}
	return out, nil
}

// Catalog lists every repository the index's search finds with an empty
// query. An index without search yields an empty list and no error.
func (c *v1Client) Catalog(ctx context.Context) ([]string, error) {
	res, err := c.Search(ctx, "")
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			switch he.StatusCode {
			case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden,
				http.StatusMethodNotAllowed, http.StatusNotImplemented:
				return []string{}, nil
			}
		}
		return nil, err
	}
	names := make([]string, 0, len(res))
	for _, r := range res {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return names, nil
}

// v1ImageJSON is the part of a v1 image JSON the client checks and uses.
type v1ImageJSON struct {
	ID           string `json:"id"`
	Parent       string `json:"parent"`
	Created      string `json:"created"`
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
}

// imageJSON is GET /v1/images/<id>/json: the raw JSON and X-Docker-Size
// (-1 when absent), checked to describe id.
func (c *v1Client) imageJSON(ctx context.Context, repo, id string) ([]byte, int64, v1ImageJSON, error) {
	what := fmt.Sprintf("v1 json of image %s in %s/%s", id, c.host, repo)
	var meta v1ImageJSON
	hdr, raw, err := c.endpointJSON(ctx, repo, what, "images/"+id+"/json", &meta)
	if err != nil {
		return nil, -1, meta, err
	}
	if meta.ID != id {
		return nil, -1, meta, fmt.Errorf("%s: JSON names image %q", what, meta.ID)
	}
	size := int64(-1)
	if h := hdr.Get("X-Docker-Size"); h != "" {
		size, err = strconv.ParseInt(h, 10, 64)
		if err != nil || size < 0 {
			return nil, -1, meta, fmt.Errorf("%s: bad X-Docker-Size %q", what, h)
		}
	}
	return raw, size, meta, nil
}

// Resolve reads the image that ref (a tag, or a 64-hex image ID) names in
// repo: the ancestry, then each layer's JSON. platform is not used: a v1
// image has exactly one.
func (c *v1Client) Resolve(ctx context.Context, repo, ref string, platform Platform) (*Image, error) {
	rp, err := v1RepoPath(repo)
	if err != nil {
		return nil, err
	}
	id := ref
	if !v1IDPattern.MatchString(ref) {
		if !v1TagPattern.MatchString(ref) {
			return nil, fmt.Errorf("resolve %s:%s: bad tag %q (want [A-Za-z0-9_][A-Za-z0-9._-]{0,127} or a 64-hex image ID)", repo, ref, ref)
		}
		what := fmt.Sprintf("v1 tag %s/%s:%s", c.host, rp, ref)
		if _, _, err := c.endpointJSON(ctx, rp, what, "repositories/"+rp+"/tags/"+ref, &id); err != nil {
			return nil, err
		}
		if !v1IDPattern.MatchString(id) {
			return nil, fmt.Errorf("%s: bad image ID %q", what, id)
		}
	}
	what := fmt.Sprintf("v1 ancestry of %s in %s/%s", id, c.host, rp)
	var anc []string
	if _, _, err := c.endpointJSON(ctx, rp, what, "images/"+id+"/ancestry", &anc); err != nil {
		return nil, err
	}
	if len(anc) == 0 || anc[0] != id {
		return nil, fmt.Errorf("%s: ancestry does not start with the image itself: %q", what, anc)
	}
	seen := map[string]bool{}
	for _, a := range anc {
		if !v1IDPattern.MatchString(a) || seen[a] {
			return nil, fmt.Errorf("%s: bad or repeated image ID %q", what, a)
		}
		seen[a] = true
	}

	s, err := c.session(ctx, rp, nil)
	if err != nil {
		return nil, err
	}
	n := len(anc)
	layers := make([]Layer, n)
	metas := make([]v1ImageJSON, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, aid := range anc {
		g.Go(func() error {
			raw, size, meta, err := c.imageJSON(gctx, rp, aid)
			if err != nil {
				return err
			}
			want := ""
			if i+1 < n {
				want = anc[i+1]
			}
			if meta.Parent != want {
				return fmt.Errorf("v1 image %s: JSON parent %q, ancestry says %q", aid, meta.Parent, want)
			}
			// Base first: ancestry is top first.
			layers[n-1-i] = Layer{ID: aid, Size: size, JSON: raw, Checksum: s.checksums[aid]}
			metas[i] = meta
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("resolve %s:%s: %w", repo, ref, err)
	}
	img := &Image{
		Registry:   c.host,
		Repository: repo,
		Reference:  ref,
		API:        APIV1,
		Layers:     layers,
		Platform:   Platform{OS: metas[0].OS, Architecture: metas[0].Architecture, Variant: metas[0].Variant},
	}
	if metas[0].Created != "" {
		t, err := time.Parse(time.RFC3339Nano, metas[0].Created)
		if err != nil {
			return nil, fmt.Errorf("resolve %s:%s: image %s: bad created time %q: %w", repo, ref, id, metas[0].Created, err)
		}
		img.Created = t
	}
	return img, nil
}

// OpenBlob returns the layer of image l.ID. When l.Size is unknown it is
// read from X-Docker-Size, or from the layer response itself.
func (c *v1Client) OpenBlob(ctx context.Context, repo string, l Layer) (blobio.Source, error) {
	rp, err := v1RepoPath(repo)
	if err != nil {
		return nil, err
	}
	if !v1IDPattern.MatchString(l.ID) {
		return nil, fmt.Errorf("open v1 layer %q in %s: not a 64-hex image ID", l.ID, repo)
	}
	size := l.Size
	if size < 0 {
		if _, size, _, err = c.imageJSON(ctx, rp, l.ID); err != nil {
			return nil, fmt.Errorf("open v1 layer %s: %w", l.ID, err)
		}
	}
	b := c.newV1Blob(rp, l.ID, size)
	if size < 0 {
		if b.rr.size, err = b.probeSize(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// VerifyLayer reads all of layer l and checks it against the tarsum checksum
// the repository's image list gave (l.Checksum), over l.JSON as docker's v1
// push computed it. A different sum is an error that matches
// tarsum.ErrMismatch; a layer with no listed checksum is an error too.
func (c *v1Client) VerifyLayer(ctx context.Context, repo string, l Layer) error {
	if l.Checksum == "" {
		return fmt.Errorf("verify v1 layer %s: the repository lists no checksum", l.ID)
	}
	b, err := c.OpenBlob(ctx, repo, l)
	if err != nil {
		return err
	}
	rc, err := b.Open(ctx, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tarsum.Verify(ctx, rc, l.Checksum, l.JSON); err != nil {
		return fmt.Errorf("verify v1 layer %s in %s: %w", l.ID, repo, err)
	}
	return nil
}
