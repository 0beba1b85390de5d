package registry

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"
)

const (
	catalogScope = "registry:catalog:*"
	// scopeSetupTimeout bounds a shared ping + token exchange when
	// RequestTimeout is negative (no timeout).
	scopeSetupTimeout = 5 * time.Minute
)

func repoScope(repo string) string { return "repository:" + repo + ":pull" }

// scopeCache holds one authenticated http.Client per auth scope, made once
// (single-flight) and kept for the client's life: go-containerregistry's
// bearer transport refreshes its token by itself on 401.
type scopeCache struct {
	make func(ctx context.Context, scope string) (*http.Client, error)
	// setupTimeout bounds a shared setup, which runs detached from the
	// caller that started it so one caller's cancellation does not fail
	// the others.
	setupTimeout time.Duration

	mu      sync.Mutex
	clients map[string]*http.Client
	flight  singleflight.Group
}

func newScopeCache(mk func(context.Context, string) (*http.Client, error), setupTimeout time.Duration) *scopeCache {
	return &scopeCache{make: mk, setupTimeout: setupTimeout, clients: map[string]*http.Client{}}
}

func (s *scopeCache) get(ctx context.Context, scope string) (*http.Client, error) {
	s.mu.Lock()
	hc := s.clients[scope]
	s.mu.Unlock()
	if hc != nil {
		return hc, nil
	}
	ch := s.flight.DoChan(scope, func() (any, error) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.setupTimeout)
		defer cancel()
		hc, err := s.make(sctx, scope)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.clients[scope] = hc
		s.mu.Unlock()
		return hc, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*http.Client), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newScopeClient pings the registry and sets up auth for one scope:
// go-containerregistry's transport.NewWithContext (ping → Basic, or Bearer
// with a first token for scope).
func (c *v2Client) newScopeClient(ctx context.Context, scope string) (*http.Client, error) {
	rt, err := transport.NewWithContext(ctx, c.reg, c.auth, &rewindBody{next: c.authBase}, []string{scope})
	if err != nil {
		return nil, fmt.Errorf("auth for %s at %s: %w", scope, c.host, fromTransportError(err))
	}
	return &http.Client{Transport: rt}, nil
}

// scoped is the pipeline for requests in scope: retries over an exchange
// through that scope's authenticated client.
func (c *v2Client) scoped(scope string) http.RoundTripper {
	return &retryTransport{
		next:   &exchange{client: func(ctx context.Context) (*http.Client, error) { return c.scopes.get(ctx, scope) }},
		policy: c.retry,
		log:    c.log,
	}
}

// do sends one bodyless request in scope through the pipeline. It returns
// the response whatever its status, except the retryable ones, which end
// in an error once retries are spent.
func (c *v2Client) do(ctx context.Context, what, scope, method, url string, hdr http.Header) (*http.Response, error) {
	resp, err := send(ctx, c.scoped(scope), method, url, hdr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return resp, nil
}

// rewindBody sends each attempt of a request that has a body with a fresh
// one from GetBody: go-containerregistry's bearer transport sends a request
// again after refreshing its token, and the first attempt consumed the body.
type rewindBody struct{ next http.RoundTripper }

func (t *rewindBody) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.GetBody == nil || req.Body == nil || req.Body == http.NoBody {
		return t.next.RoundTrip(req)
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("rewind request body: %w", err)
	}
	r := req.Clone(req.Context())
	r.Body = body
	return t.next.RoundTrip(r)
}
