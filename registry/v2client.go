package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sirupsen/logrus"
)

// v2Client is a Client for the OCI Distribution (Docker Registry v2) API.
type v2Client struct {
	host   string // as given: what Host returns and errors name
	api    string // where requests go (Docker Hub: registry-1.docker.io)
	scheme string // "https", or "http" for loopback hosts and PlainHTTP
	reg    name.Registry
	auth   authn.Authenticator
	base   http.RoundTripper // Options.Transport or the default clone
	// authBase is what ggcr's auth transports wrap: the pipeline's hop
	// layers over base (pipeline.go).
	authBase http.RoundTripper
	opts     Options
	retry    retryPolicy
	log      *logrus.Entry

	scopes *scopeCache
	// gates admits the requests of each blob (rangegate.go).
	gates rangeGates
	// locations remembers where blobs were redirected (locations.go).
	locations blobLocations
	// referrers remembers a registry without the referrers API.
	referrers referrersAPI
}

var _ Client = (*v2Client)(nil)

func (c *v2Client) Host() string { return c.host }
func (c *v2Client) API() string  { return APIV2 }

func (c *v2Client) url(path string) string { return c.scheme + "://" + c.api + path }

// repoPath normalizes and checks repo: "library/" for one-component names
// on Docker Hub.
func (c *v2Client) repoPath(repo string) (string, error) {
	repo = strings.Trim(repo, "/")
	if c.host == DockerHub && repo != "" && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	if err := checkRepository(repo); err != nil {
		return "", err
	}
	return repo, nil
}

// maxListBody bounds one catalog or tag list page.
const maxListBody = 32 << 20

// Catalog lists every repository, following Link pages. A registry that
// refuses the catalog (401, 403, 404, or a token server that will not
// grant registry:catalog:*) lists nothing, without error.
func (c *v2Client) Catalog(ctx context.Context) ([]string, error) {
	names, err := c.list(ctx, "catalog of "+c.host, catalogScope, "/v2/_catalog")
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || errors.Is(he, ErrUnauthorized)) {
			c.log.Debugf("no catalog: %v", err)
			return []string{}, nil
		}
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// Tags lists repo's tags, sorted. ErrNotFound if the repository is unknown.
func (c *v2Client) Tags(ctx context.Context, repo string) ([]string, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("tags of %s: %w", repo, err)
	}
	tags, err := c.list(ctx, fmt.Sprintf("tags of %s/%s", c.host, rp), repoScope(rp), "/v2/"+rp+"/tags/list")
	if err != nil {
		return nil, err
	}
	sort.Strings(tags)
	return tags, nil
}

// list GETs path?n=PageSize and the pages its Link headers name, and
// returns the concatenated "repositories" or "tags".
func (c *v2Client) list(ctx context.Context, what, scope, path string) ([]string, error) {
	next := c.url(path) + "?n=" + strconv.Itoa(c.opts.PageSize)
	seen := map[string]bool{}
	out := []string{}
	pages := listPagesOf(ctx)
	var budget listBudget
	for page := 0; next != ""; page++ {
		if seen[next] {
			return nil, fmt.Errorf("%s: Link headers loop (page %d, %s)", what, page, redactURLString(next))
		}
		if page >= maxListPages {
			return nil, fmt.Errorf("%s: stopped after %d pages, the registry's Link headers do not end: %w", what, page, ErrListTooLong)
		}
		seen[next] = true
		resp, err := c.do(ctx, what, scope, http.MethodGet, next, http.Header{"Accept": {"application/json"}})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			he := newHTTPError(resp)
			if page == 0 && he.StatusCode == http.StatusBadRequest && he.hasCode("PAGINATION_NUMBER_INVALID") {
				// n is more than the server allows: let it choose.
				c.log.Debugf("%s: page size %d refused, using the server's", what, c.opts.PageSize)
				next = c.url(path)
				seen = map[string]bool{}
				continue
			}
			return nil, fmt.Errorf("%s: %w", what, he)
		}
		var body struct {
			Repositories []string `json:"repositories"`
			Tags         []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxListBody)).Decode(&body)
		link := resp.Header.Get("Link")
		base := resp.Request.URL
		drain(resp)
		if err != nil {
			return nil, fmt.Errorf("%s: decode page %d: %w", what, page+1, err)
		}
		before := len(out)
		for _, name := range append(body.Repositories, body.Tags...) {
			if err := budget.add(len(name)); err != nil {
				return nil, fmt.Errorf("%s: stopped at page %d: %w", what, page+1, err)
			}
			out = append(out, name)
		}
		if pages != nil && len(out) > before {
			pages(out[before:])
		}
		next, err = nextLink(base, link, c.api)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return out, nil
}

// nextLink finds rel="next" in a Link header and resolves it against the
// URL of the page that carried it. It must stay on the registry host.
func nextLink(base *url.URL, header, host string) (string, error) {
	if header == "" {
		return "", nil
	}
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, "<") {
			continue
		}
		end := strings.IndexByte(part, '>')
		if end < 0 {
			continue
		}
		target, params := part[1:end], part[end+1:]
		isNext := false
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(k, "rel") && strings.EqualFold(strings.Trim(v, `"`), "next") {
				isNext = true
			}
		}
		if !isNext {
			continue
		}
		u, err := base.Parse(target)
		if err != nil {
			return "", fmt.Errorf("bad Link target %q: %w", target, err)
		}
		if u.Host != host {
			return "", fmt.Errorf("Link target %q leaves the registry host %s", target, host)
		}
		return u.String(), nil
	}
	return "", nil
}
