package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// stallTransport is the stall watchdog: unless timeout is negative, it
// cancels a request whose response headers, or whose next body bytes
// during a Read, take longer than timeout. The error then wraps
// errStalled, which IsTemporary accepts: the retry layer tries again, a
// blob stream resumes. Time between Reads is the caller's, not a stall.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	rctx, cancel := context.WithCancelCause(ctx)
	req = req.WithContext(rctx)
	if t.timeout < 0 {
		resp, err := t.next.RoundTrip(req)
		if err != nil {
			cancel(nil)
			return nil, err
		}
		resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel}
		return resp, nil
	}
	stall := &stalledError{timeout: t.timeout}
	timer := time.AfterFunc(t.timeout, func() { cancel(stall) })
	resp, err := t.next.RoundTrip(req)
	timer.Stop()
	if err != nil {
		if errors.Is(context.Cause(rctx), errStalled) && ctx.Err() == nil {
			err = fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), stall)
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &watchedBody{body: resp.Body, ctx: rctx, cancel: cancel, timer: timer, timeout: t.timeout}
	return resp, nil
}

// watchedBody arms the stall watchdog around each Read (not between reads:
// a slow consumer is not a stalled server) and releases the request's
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
