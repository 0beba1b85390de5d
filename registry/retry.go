package registry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// retryPolicy is when a request is sent again and how long to wait first.
type retryPolicy struct {
	// rounds is 1 + Options.MaxRetries: how often each host is tried.
	rounds int
	// backoffMin doubles per round up to backoffMax.
	backoffMin, backoffMax time.Duration
	// retryAfterMax is the longest Retry-After waited for; a longer one
	// ends the retries with the server's error.
	retryAfterMax time.Duration
}

func newRetryPolicy(opts Options) retryPolicy {
	return retryPolicy{
		rounds:        1 + opts.MaxRetries,
		backoffMin:    opts.RetryBackoffMin,
		backoffMax:    opts.RetryBackoffMax,
		retryAfterMax: opts.RetryAfterMax,
	}
}

// backoff is the pause before round (1-based retries): backoffMin doubled
// per round, capped at backoffMax, with ±20% jitter so parallel readers do
// not retry in step.
func (p retryPolicy) backoff(round int) time.Duration {
	d := p.backoffMin
	for i := 1; i < round && d < p.backoffMax; i++ {
		d *= 2
	}
	d = min(d, p.backoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// failover is a set of interchangeable hosts (v1 endpoints): an attempt
// that fails moves on to the next, starting from the one that answered
// last.
type failover struct {
	hosts []string     // host[:port]
	good  atomic.Int64 // index into hosts of the one that answered last
}

func (f *failover) has(host string) bool { return slices.Contains(f.hosts, host) }

// retryTransport sends a bodyless request up to policy.rounds times while
// the failures are temporary (connection errors, stalls, 5xx, 408, 429),
// pausing between rounds for the back-off or the server's Retry-After,
// whichever is longer. With failover, a round tries each host once, and
// only requests to one of its hosts are moved. It returns the first
// response with any other status, for the caller to judge, or an error.
// Cancelling the request's context ends it at once.
type retryTransport struct {
	next     http.RoundTripper
	policy   retryPolicy
	failover *failover // nil: every attempt goes to the request's URL
	log      *logrus.Entry
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	rounds := t.policy.rounds
	if req.Body != nil && req.Body != http.NoBody {
		rounds = 1 // a body cannot be sent twice
	}
	hosts, start := []string{req.URL.Host}, 0
	if t.failover != nil && t.failover.has(req.URL.Host) {
		hosts, start = t.failover.hosts, int(t.failover.good.Load())
	}
	what := req.Method + " " + redactURL(req.URL)
	var lastErr error
	var retryAfter time.Duration
	for round := 0; round < rounds; round++ {
		if round > 0 {
			wait := max(t.policy.backoff(round), retryAfter)
			t.log.WithError(lastErr).Debugf("%s: round %d of %d in %v", what, round+1, rounds, wait)
			if err := sleepCtx(ctx, wait); err != nil {
				return nil, fmt.Errorf("%w (last error: %v)", err, lastErr)
			}
		}
		retryAfter = 0
		temporary := false
		for k := range hosts {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			i := (start + k) % len(hosts)
			attempt := req.Clone(ctx)
			if attempt.URL.Host != hosts[i] {
				attempt.URL.Host, attempt.Host = hosts[i], hosts[i]
			}
			resp, err := t.next.RoundTrip(attempt)
			if err == nil && !retryableStatus(resp.StatusCode) {
				if t.failover != nil && len(hosts) > 1 {
					t.failover.good.Store(int64(i))
				}
				return resp, nil
			}
			if err == nil {
				he := newHTTPError(resp)
				if he.RetryAfter > t.policy.retryAfterMax {
					return nil, fmt.Errorf("server asks to retry after %v, longer than %v: %w", he.RetryAfter, t.policy.retryAfterMax, he)
				}
				retryAfter = max(retryAfter, he.RetryAfter)
				temporary = true
				lastErr = he
			} else {
				if cerr := ctx.Err(); cerr != nil {
					return nil, cerr
				}
				err = fromTransportError(err)
				if IsTemporary(err) {
					temporary = true
					var he *HTTPError
					if errors.As(err, &he) {
						retryAfter = max(retryAfter, min(he.RetryAfter, t.policy.retryAfterMax))
					}
				}
				lastErr = err
			}
			t.log.WithError(lastErr).Debugf("%s: attempt on %s failed", what, hosts[i])
		}
		if !temporary {
			return nil, lastErr
		}
	}
	if len(hosts) > 1 {
		return nil, fmt.Errorf("%d hosts failed, %d round(s): %w", len(hosts), rounds, lastErr)
	}
	return nil, fmt.Errorf("gave up after %d attempts: %w", rounds, lastErr)
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
