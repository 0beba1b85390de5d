package registry

// The request path of the v2 client, outermost first:
//
//	doWith      retries: connection errors, 5xx, 408, 429 (Retry-After),
//	            capped exponential back-off, ends at once on ctx
//	send        per-attempt watchdog: response headers and every pause
//	            between body bytes within RequestTimeout
//	http.Client follows redirects; Authorization is set per request by the
//	            auth transport and only for the registry host, so a
//	            redirect to a storage host never carries it
//	ggcr auth   per scope ("repository:<name>:pull", "registry:catalog:*"):
//	            Basic, or Bearer tokens fetched and refreshed on 401
//	ggcr scheme + user agent
//	schemeGuard plain HTTP only where the policy allows it
//	base        Options.Transport or a clone of http.DefaultTransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
	rt, err := transport.NewWithContext(ctx, c.reg, c.auth, c.authBase, []string{scope})
	if err != nil {
		return nil, fmt.Errorf("auth for %s at %s: %w", scope, c.host, fromTransportError(err))
	}
	return &http.Client{Transport: rt}, nil
}

// do sends one request in scope with retries (see doWith).
func (c *v2Client) do(ctx context.Context, what, scope, method, url string, hdr http.Header) (*http.Response, error) {
	return c.doWith(ctx, what, func(ctx context.Context) (*http.Client, error) {
		return c.scopes.get(ctx, scope)
	}, method, url, hdr)
}

// doWith sends method url with hdr through the client that client returns,
// retrying connection errors, stalls, 5xx, 408 and 429 up to MaxRetries
// times with capped exponential back-off (at least the server's
// Retry-After). It returns the first response with any other status, for
// the caller to judge, or an error. Cancelling ctx ends it at once.
func (c *v2Client) doWith(ctx context.Context, what string, client func(context.Context) (*http.Client, error),
	method, url string, hdr http.Header) (*http.Response, error) {
	attempts := 1 + c.opts.MaxRetries
	var lastErr error
	var retryAfter time.Duration
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			wait := max(c.backoff(attempt), retryAfter)
			c.log.WithError(lastErr).Debugf("%s: attempt %d of %d in %v", what, attempt+1, attempts, wait)
			if err := sleepCtx(ctx, wait); err != nil {
				return nil, fmt.Errorf("%s: %w (last error: %v)", what, err, lastErr)
			}
		}
		retryAfter = 0
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		hc, err := client(ctx)
		if err == nil {
			var resp *http.Response
			resp, err = c.send(ctx, hc, method, url, hdr)
			if err == nil {
				if !retryableStatus(resp.StatusCode) {
					return resp, nil
				}
				he := newHTTPError(resp)
				if he.RetryAfter > c.opts.RetryAfterMax {
					return nil, fmt.Errorf("%s: server asks to retry after %v, longer than %v: %w", what, he.RetryAfter, c.opts.RetryAfterMax, he)
				}
				retryAfter = he.RetryAfter
				lastErr = he
				continue
			}
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("%s: %w", what, cerr)
		}
		err = fromTransportError(err)
		if !IsTemporary(err) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		var he *HTTPError
		if errors.As(err, &he) {
			retryAfter = min(he.RetryAfter, c.opts.RetryAfterMax)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("%s: gave up after %d attempts: %w", what, attempts, lastErr)
}

// backoff is the pause before attempt (1-based retries): RetryBackoffMin
// doubled per attempt, capped at RetryBackoffMax, with ±20% jitter so
// parallel readers do not retry in step.
func (c *v2Client) backoff(attempt int) time.Duration {
	d := c.opts.RetryBackoffMin
	for i := 1; i < attempt && d < c.opts.RetryBackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.RetryBackoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// send makes one attempt. Unless RequestTimeout is negative, a watchdog
// cancels the attempt when the response headers, or the next body bytes,
// take longer than RequestTimeout; the error then wraps errStalled.
func (c *v2Client) send(ctx context.Context, hc *http.Client, method, url string, hdr http.Header) (*http.Response, error) {
	timeout := c.opts.RequestTimeout
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, method, url, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = append([]string(nil), vs...)
	}
	if timeout < 0 {
		resp, err := hc.Do(req)
		if err != nil {
			cancel(nil)
			return nil, err
		}
		resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel}
		return resp, nil
	}
	stall := &stalledError{timeout: timeout}
	timer := time.AfterFunc(timeout, func() { cancel(stall) })
	resp, err := hc.Do(req)
	timer.Stop()
	if err != nil {
		if errors.Is(context.Cause(rctx), errStalled) && ctx.Err() == nil {
			err = fmt.Errorf("%s %s: %w", method, redactURLString(url), stall)
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel, timer: timer, timeout: timeout}
	return resp, nil
}

func redactURLString(s string) string {
	u, err := urlParse(s)
	if err != nil {
		return "<bad URL>"
	}
	return redactURL(u)
}

// watchedBody arms the stall watchdog around each Read (not between reads:
// a slow consumer is not a stalled server) and releases the attempt's
// context on Close.
type watchedBody struct {
	body    io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer // nil: no watchdog
	timeout time.Duration
}

func (w *watchedBody) Read(p []byte) (int, error) {
	if w.timer != nil {
		w.timer.Reset(w.timeout)
	}
	n, err := w.body.Read(p)
	if w.timer != nil {
		w.timer.Stop()
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(w.ctx); errors.Is(cause, errStalled) {
			err = cause
		}
	}
	return n, err
}

func (w *watchedBody) Close() error {
	if w.timer != nil {
		w.timer.Stop()
	}
	err := w.body.Close()
	w.cancel(nil)
	return err
}

// drain reads a little of a body we do not need, so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
