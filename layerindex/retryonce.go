package layerindex

import (
	"context"
	"errors"
	"sync"
)

// retryOnce computes a value once, by the first caller, and keeps it; a
// failure is not kept: the next caller tries again. Callers that arrive
// while an attempt runs wait for it, each only as long as its own ctx
// allows. Unlike resetting a sync.Once, a retry never touches state that
// a running attempt or its waiters use.
type retryOnce[T any] struct {
	mu      sync.Mutex
	done    bool
	val     T
	running *onceAttempt[T] // nil when no attempt runs
}

type onceAttempt[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// get returns the kept value, or runs fn (at most one at a time) to get it.
// A waiter whose leader failed on the leader's own context tries itself;
// any other failure is shared with those who waited for it.
func (o *retryOnce[T]) get(ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	for {
		o.mu.Lock()
		if o.done {
			v := o.val
			o.mu.Unlock()
			return v, nil
		}
		a := o.running
		if a == nil {
			a = &onceAttempt[T]{done: make(chan struct{})}
			o.running = a
			o.mu.Unlock()
			o.lead(ctx, a, fn)
			return a.val, a.err
		}
		o.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		if a.err == nil {
			return a.val, nil
		}
		if !errors.Is(a.err, context.Canceled) && !errors.Is(a.err, context.DeadlineExceeded) {
			return zero, a.err
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
	}
}

// lead runs one attempt and publishes its outcome, even if fn panics.
func (o *retryOnce[T]) lead(ctx context.Context, a *onceAttempt[T], fn func(context.Context) (T, error)) {
	defer func() {
		o.mu.Lock()
		o.running = nil
		if a.err == nil {
			o.done, o.val = true, a.val
		}
		o.mu.Unlock()
		close(a.done)
	}()
	a.err = errors.New("attempt did not finish") // what waiters see if fn panics
	a.val, a.err = fn(ctx)
}

// set keeps v as the value unless one is kept already.
func (o *retryOnce[T]) set(v T) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.done {
		o.done, o.val = true, v
	}
}

// peek returns the kept value, ok false if there is none yet.
func (o *retryOnce[T]) peek() (T, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.val, o.done
}
