package registrytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// EndlessLister is a hostile v2 registry whose catalog and tag lists never
// end: every page carries a Link to a fresh next page, so a client that
// trusts Link headers walks forever. Anything else is 404.
type EndlessLister struct {
	// Host is "127.0.0.1:port".
	Host  string
	pages atomic.Int64
}

// StartEndlessLister starts an EndlessLister whose pages hold perPage
// distinct names each (0: empty pages), and stops it in t.Cleanup.
func StartEndlessLister(t testing.TB, perPage int) *EndlessLister {
	t.Helper()
	l := &EndlessLister{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.serve(w, r, perPage)
	}))
	t.Cleanup(srv.Close)
	l.Host = strings.TrimPrefix(srv.URL, "http://")
	return l
}

// Pages is how many list pages were served.
func (l *EndlessLister) Pages() int { return int(l.pages.Load()) }

func (l *EndlessLister) serve(w http.ResponseWriter, r *http.Request, perPage int) {
	key := ""
	switch {
	case r.URL.Path == "/v2/":
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		fmt.Fprint(w, "{}")
		return
	case r.URL.Path == "/v2/_catalog":
		key = "repositories"
	case strings.HasSuffix(r.URL.Path, "/tags/list"):
		key = "tags"
	default:
		http.NotFound(w, r)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	l.pages.Add(1)
	names := make([]string, perPage)
	for i := range names {
		names[i] = fmt.Sprintf("n%d-%d", page, i)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Link", fmt.Sprintf(`<%s?n=%d&page=%d>; rel="next"`, r.URL.Path, perPage, page+1))
	json.NewEncoder(w).Encode(map[string]any{"name": "endless", key: names})
}
