package fs

import (
	"context"
	"fmt"
	"sync"
)

// liveList is a catalog or tag list as it is fetched: the names of the
// pages that arrived so far, then the whole answer. A listing of the
// directory follows it page by page, so the kernel gets the first names
// while later pages are fetched.
type liveList struct {
	what string // for errors: "catalog", "tags of <repo>"

	mu    sync.Mutex
	names []string      // the pages' names so far, in the registry's order
	grew  chan struct{} // closed when names grows or the listing ends
	done  bool
	all   []string // the whole sorted list, once done without error
	err   error
}

func newLiveList(what string) *liveList {
	return &liveList{what: what, grew: make(chan struct{})}
}

// wholeList is a listing known whole already (a cached answer).
func wholeList(what string, all []string, err error) *liveList {
	l := newLiveList(what)
	l.finish(all, err)
	return l
}

// addPage appends one page's names (the caller keeps its slice).
func (l *liveList) addPage(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.names = append(l.names, names...)
	close(l.grew)
	l.grew = make(chan struct{})
}

func (l *liveList) finish(all []string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done, l.all, l.err = true, all, err
	close(l.grew)
}

// listProgress is what a reader of a liveList has not seen yet.
type listProgress struct {
	names []string // page names past the ones the reader had
	done  bool     // the listing ended: all or err is its answer
	all   []string
	err   error
}

// since returns the page names past the first have, and the answer if the
// listing is done. With wait, and nothing new, it first waits (up to ctx)
// for a page or the end.
func (l *liveList) since(ctx context.Context, have int, wait bool) (listProgress, error) {
	for {
		l.mu.Lock()
		p := listProgress{names: l.names[min(have, len(l.names)):], done: l.done, all: l.all, err: l.err}
		grew := l.grew
		l.mu.Unlock()
		if !wait || p.done || len(p.names) > 0 {
			return p, nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return listProgress{}, fmt.Errorf("wait for %s: %w", l.what, ctx.Err())
		}
	}
}

// wait returns the whole answer, waiting up to ctx for it.
func (l *liveList) wait(ctx context.Context) ([]string, error) {
	for {
		l.mu.Lock()
		done, all, err, grew := l.done, l.all, l.err, l.grew
		l.mu.Unlock()
		if done {
			return all, err
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", l.what, ctx.Err())
		}
	}
}
