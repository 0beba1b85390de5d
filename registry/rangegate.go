package registry

import (
	"context"
	"sync"
)

// rangeGates keeps, per blob of a client, the verdict of the last answer
// to a request of it, so that a cold pull-through cache (which answers a
// Range request with the whole blob, and for a blob whose miss is in flight
// fetches one more copy from its origin without keeping it) is asked one
// request at a time:
//   - until a 206 said the server honours Range for the blob, one request
//     asks while the others wait for its answer;
//   - a whole answer (200) is shared: the others take their bytes from it
//     or wait for its end (wholeanswer.go), then ask one at a time again;
//   - a 206 lets every request ask at once, until a 200 comes again.
//
// A nil *rangeGates lets every request ask at once and shares nothing.
type rangeGates struct {
	mu sync.Mutex
	m  map[string]*rangeGate
}

// rangeGate is one blob's entry.
type rangeGate struct {
	honoured bool          // the last verdict was a 206
	answer   *wholeAnswer  // the whole answer being read, if any
	asking   chan struct{} // the request in flight while no verdict holds; closed at its answer
}

func (g *rangeGates) entryLocked(key string) *rangeGate {
	if g.m == nil {
		g.m = make(map[string]*rangeGate)
	}
	e := g.m[key]
	if e == nil {
		e = &rangeGate{}
		g.m[key] = e
	}
	return e
}

// admit says how a request of key proceeds: from the whole answer a being
// read (join it, or wait for its end and be admitted again), or by asking,
// alone or not; either way it reports its answer with answered.
func (g *rangeGates) admit(ctx context.Context, key string) (a *wholeAnswer, alone bool, err error) {
	if g == nil {
		return nil, false, nil
	}
	for {
		g.mu.Lock()
		e := g.entryLocked(key)
		switch {
		case e.answer != nil:
			a := e.answer
			g.mu.Unlock()
			return a, false, nil
		case e.honoured:
			g.mu.Unlock()
			return nil, false, nil
		case e.asking == nil:
			e.asking = make(chan struct{})
			g.mu.Unlock()
			return nil, true, nil
		}
		asking := e.asking
		g.mu.Unlock()
		select {
		case <-asking:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// answered records the answer to a request of key: a 206 (honoured), a
// whole answer a, or neither (an error); alone (admit's) releases the
// requests admit held back. It reports whether a is now shared (false when another
// whole answer is, or g is nil).
func (g *rangeGates) answered(key string, alone, honoured bool, a *wholeAnswer) (shared bool) {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entryLocked(key)
	if honoured {
		e.honoured = true
	}
	if a != nil {
		e.honoured = false
		if e.answer == nil {
			e.answer, shared = a, true
		}
	}
	if alone && e.asking != nil {
		close(e.asking)
		e.asking = nil
	}
	return shared
}

// ended unshares a at its end: the next request asks alone.
func (g *rangeGates) ended(key string, a *wholeAnswer) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.m[key]; e != nil && e.answer == a {
		e.answer = nil
	}
}
