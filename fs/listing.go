package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// listingHandle is an open directory listing a catalog or tag list
// (pathDir, tagsDir) as its pages arrive: each READDIR answers with the
// names there are and waits only when there are none yet, so the kernel
// gets the first page while later ones are fetched. Entries come in the
// registry's order, each once. Offsets are positions in that order, so
// rewinddir and seekdir to a given offset work.
type listingHandle struct {
	t    *tree
	dir  *gofs.Inode
	list *liveList
	// entry is the directory's entry for one listed name; show false leaves
	// it out (not in this directory), bad counts it as not a valid name.
	entry func(name string) (c child, show, bad bool)
	// end is the entries known once the listing is whole (all, sorted).
	end func(ctx context.Context, all []string) ([]child, error)
	// logBad logs, once per listing, how many names were not valid.
	logBad func(n int)

	mu       sync.Mutex
	shown    []child        // every entry so far; entry i has offset i+1
	offsets  map[string]int // every name met: its entry's offset, 0 if left out
	pos      int            // the next entry to hand out
	used     int            // page names of list consumed
	ended    *listProgress  // list ended: its answer, once its pages are out
	finished bool           // ended and finished: shown is whole
	gave     bool           // entries handed out since READDIR last got none waiting
	bad      int
	unshown  unshownNames
}

var (
	_ = (gofs.FileReaddirenter)((*listingHandle)(nil))
	_ = (gofs.FileLookuper)((*listingHandle)(nil))
	_ = (gofs.FileSeekdirer)((*listingHandle)(nil))
)

func (t *tree) newListingHandle(dir *gofs.Inode, list *liveList) *listingHandle {
	return &listingHandle{t: t, dir: dir, list: list, offsets: map[string]int{}}
}

// met reports whether the listing met name already (shown or left out).
func (h *listingHandle) met(name string) bool {
	_, ok := h.offsets[name]
	return ok
}

// Readdirent hands out the next entry. With none ready it waits for the
// next page only if it handed out nothing since READDIR last ended on an
// empty hand: otherwise it returns nil so the entries go to the kernel now
// (go-fuse ends one READDIR answer on nil; an empty answer ends the
// listing, and never happens before the list does).
func (h *listingHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		if h.pos < len(h.shown) {
			c := h.shown[h.pos]
			h.pos++
			h.gave = true
			return &fuse.DirEntry{Name: c.name, Mode: c.mode, Ino: c.ino, Off: uint64(h.pos)}, 0
		}
		if h.finished {
			return nil, 0
		}
		if h.ended != nil { // after every page's entries
			if err := h.finish(ctx, *h.ended); err != nil {
				return nil, h.t.errno("readdir", h.dir, err)
			}
			continue
		}
		wait := !h.gave
		h.gave = false
		p, err := h.next(ctx, wait)
		if err != nil {
			return nil, h.t.errno("readdir", h.dir, err)
		}
		if len(p.names) == 0 && !p.done {
			return nil, 0
		}
		h.used += len(p.names)
		h.add(p.names)
		if p.done {
			h.ended = &p
		}
	}
}

func (h *listingHandle) next(ctx context.Context, wait bool) (listProgress, error) {
	if !wait {
		return h.list.since(ctx, h.used, false)
	}
	ctx, cancel := h.t.opCtx(ctx)
	defer cancel()
	return h.list.since(ctx, h.used, true)
}

func (h *listingHandle) add(names []string) {
	for _, name := range names {
		c, show, bad := h.entry(name)
		switch {
		case bad:
			h.bad++
		case !show || h.met(c.name):
		case !h.unshown.showable(c.name):
			h.offsets[c.name] = 0
		default:
			h.shown = append(h.shown, c)
			h.offsets[c.name] = len(h.shown)
		}
	}
}

// finish adds what the whole answer holds beyond its pages (an answer
// from records has none) and what end adds, and logs what was left out.
func (h *listingHandle) finish(ctx context.Context, p listProgress) error {
	if p.err != nil {
		return p.err
	}
	h.add(p.all)
	ctx, cancel := h.t.opCtx(ctx)
	defer cancel()
	more, err := h.end(ctx, p.all)
	if err != nil {
		return err
	}
	for _, c := range more {
		if !h.met(c.name) {
			h.shown = append(h.shown, c)
			h.offsets[c.name] = len(h.shown)
		}
	}
	h.finished = true
	if h.bad > 0 {
		h.logBad(h.bad)
	}
	h.unshown.log(h.t, h.dir)
	return nil
}

// Lookup is READDIRPLUS's lookup of an entry Readdirent handed out: it is
// known without asking the catalog or tag list (which may still be
// arriving), or a manifest.
func (h *listingHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	h.mu.Lock()
	var c child
	if off := h.offsets[name]; off > 0 {
		c = h.shown[off-1]
	}
	h.mu.Unlock()
	if c.make == nil {
		return h.dir.Operations().(gofs.NodeLookuper).Lookup(ctx, name, out)
	}
	return h.t.lookupChild(ctx, h.dir, c, out)
}

// Seekdir goes back to an offset handed out (0: rewinddir).
func (h *listingHandle) Seekdir(_ context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off > uint64(len(h.shown)) {
		return syscall.EINVAL
	}
	h.pos, h.gave = int(off), false
	return 0
}
