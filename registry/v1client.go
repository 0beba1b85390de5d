package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/tarsum"
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

// v1Client is a Client for the Docker Registry v1 API. Per repository it
// asks the index (the host it was made for) for the image list with
// "X-Docker-Token: true" and keeps the token, endpoints and cookie that
// answer gives (v1Session); tags, image JSON, ancestry and layers then come
// from the endpoints with "Authorization: Token …", failing over across
// them; a 401 from an endpoint redoes the handshake once. One-component
// names get "library/", as docker did. docs/design/registry.md has the
// protocol.
type v1Client struct {
	host  string // index host[:port]
	index string // "scheme://host/v1/"
	// exchange is the pipeline under the retry layer (pipeline.go), with
	// the client's cookie jar; index requests retry over it, endpoint
	// requests retry and fail over (v1Session.rt).
	exchange           http.RoundTripper
	retry              retryPolicy
	opts               Options
	username, password string
	log                *logrus.Entry
	// gates admits the requests of each layer (rangegate.go).
	gates rangeGates
	// locations remembers where layers were redirected.
	locations blobLocations

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
	// rt sends requests to the endpoints: retries that fail over across
	// them, starting from the one that answered last.
	rt http.RoundTripper
}

// newV1Client makes a v1 client for the index at host ("host[:port]") with
// opts (defaults filled) and Basic credentials (empty: anonymous). It does
// no I/O.
func newV1Client(host string, opts Options, username, password string) (*v1Client, error) {
	if host == "" || strings.ContainsAny(host, "/ ") || strings.Contains(host, "://") {
		return nil, fmt.Errorf("v1 client: bad registry host %q: want host[:port]", host)
	}
	scheme := schemeFor(host, opts.PlainHTTP)
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, fmt.Errorf("v1 client: cookie jar: %w", err)
	}
	hc := &http.Client{Transport: hopTransport(baseTransport(opts), host, scheme, opts), Jar: jar}
	return &v1Client{
		host:     host,
		index:    scheme + "://" + host + "/v1/",
		exchange: &exchange{client: fixedClient(hc)},
		retry:    newRetryPolicy(opts),
		opts:     opts,
		username: username,
		password: password,
		log:      opts.Logger.WithField("registry", host),
		sessions: map[string]*v1Session{},
	}, nil
}

// retrying is the retry layer over the exchange; with f, failing over
// across f's hosts.
func (c *v1Client) retrying(f *failover) http.RoundTripper {
	return &retryTransport{next: c.exchange, policy: c.retry, failover: f, log: c.log}
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

// get sends GET url through rt with "Accept: application/json" and prep's
// headers. Any status but a retryable one is returned for the caller to
// judge.
func (c *v1Client) get(ctx context.Context, rt http.RoundTripper, what, url string, prep func(*http.Request)) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	if prep != nil {
		prep(req)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return resp, nil
}

// indexGet is get of path on the index, with retries.
func (c *v1Client) indexGet(ctx context.Context, what, path string, prep func(*http.Request)) (*http.Response, error) {
	return c.get(ctx, c.retrying(nil), what, c.index+path, prep)
}

func (c *v1Client) setBasic(req *http.Request) {
	if c.username != "" || c.password != "" {
		req.SetBasicAuth(c.username, c.password)
	}
}

// Ping asks the index whether it speaks v1.
func (c *v1Client) Ping(ctx context.Context) (V1Ping, error) {
	what := "v1 ping " + c.host
	resp, err := c.indexGet(ctx, what, "_ping", nil)
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
	resp, err := c.indexGet(ctx, what, "repositories/"+repo+"/images", func(r *http.Request) {
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
	var hosts []string
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
			hosts = append(hosts, ep)
		}
	}
	if len(s.endpoints) == 0 {
		// No endpoints listed: the index is the registry too.
		s.endpoints = []string{c.index}
		hosts = []string{c.host}
	}
	s.rt = c.retrying(&failover{hosts: hosts})
	return s, nil
}

// endpointGet sends GET <endpoint>/v1/<path> for repo with its token (or
// Basic credentials when the index gave no token), failing over across the
// endpoints; with blob, through the redirect memory (a layer). A 401 redoes
// the handshake once. Any status other than a retryable one is returned for
// the caller to judge.
func (c *v1Client) endpointGet(ctx context.Context, repo, what, path string, blob bool, prep func(*http.Request)) (*http.Response, error) {
	s, err := c.session(ctx, repo, nil)
	if err != nil {
		return nil, err
	}
	for refreshed := false; ; refreshed = true {
		rt := s.rt
		if blob {
			rt = &redirectMemory{next: rt, locations: &c.locations, log: c.log}
		}
		resp, err := c.get(ctx, rt, what, s.endpoints[0]+path, func(r *http.Request) {
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
	resp, err := c.endpointGet(ctx, repo, what, path, false, nil)
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
	var budget listBudget
	for page := 1; ; page++ {
		if page > maxListPages {
			return nil, fmt.Errorf("%s: stopped after %d pages, the index's pages do not end: %w", what, maxListPages, ErrListTooLong)
		}
		path := "search?q=" + url.QueryEscape(q) + "&n=" + strconv.Itoa(pageSize) + "&page=" + strconv.Itoa(page)
		resp, err := c.indexGet(ctx, what, path, c.setBasic)
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
				if err := budget.add(len(r.Name) + len(r.Description)); err != nil {
					return nil, fmt.Errorf("%s: stopped at page %d: %w", what, page, err)
				}
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
