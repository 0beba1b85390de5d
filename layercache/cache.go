package layercache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/regfs/regfs/blobio"
)

// Cache is a block cache shared by every Reader it opens: storage (the
// memory and disk tiers, store.go) and the scheduling that fills it
// (sched.go). Safe for concurrent use.
type Cache struct {
	opts  Options
	store *store
	sched *scheduler
	st    counters
}

// New makes a Cache. With DiskDir set it creates the directory if needed
// and indexes the blocks already there.
func New(opts Options) (*Cache, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	st, err := newStore(opts)
	if err != nil {
		return nil, err
	}
	c := &Cache{opts: opts, store: st}
	c.sched = newScheduler(opts, st, &c.st)
	return c, nil
}

// Close cancels every fetch and readahead, waits for them and for pending
// disk writes, and makes later reads fail with ErrClosed. Idempotent.
func (c *Cache) Close() error {
	if c.sched.close() {
		c.store.close()
	}
	return nil
}

// Open returns a Reader over src with default OpenOptions. Readers of the
// same Key share cached blocks and fetches.
func (c *Cache) Open(src blobio.Source) *Reader { return c.OpenWith(src, OpenOptions{}) }

// OpenWith returns a Reader over src tuned by o.
func (c *Cache) OpenWith(src blobio.Source, o OpenOptions) *Reader {
	ctx, cancel := context.WithCancel(c.sched.ctx)
	b := c.store.blob(src, !o.Ranged)
	r := &Reader{
		s:      c.sched,
		store:  c.store,
		b:      b,
		whole:  o.WholeBlocks,
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, c.opts.MaxParallel),
		cache:  c,
	}
	r.pace.init(c.opts, b.nblocks, o.Sequential)
	if o.SkipMemory || c.store.mem == nil {
		r.priv = newPrivateBlocks(c.opts, &r.pace.lastBlock)
	}
	return r
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		SourceRequests:   c.st.sourceRequests.Load(),
		SourceErrors:     c.st.sourceErrors.Load(),
		BytesFetched:     c.st.bytesFetched.Load(),
		BytesServed:      c.store.servedBytes(),
		InFlightFetches:  c.st.inFlight.Load(),
		SharedWaits:      c.st.sharedWaits.Load(),
		ReadaheadFetches: c.st.readaheadFetches.Load(),
	}
	s.Memory, s.Disk = c.store.stats()
	s.Memory.Misses = c.st.memMisses.Load()
	return s
}

// BlockSize is the cache's block size in bytes.
func (c *Cache) BlockSize() int64 { return c.opts.BlockSize }

// PutFile stores data under name in the disk tier, atomically, counted
// against Options.DiskBytes and evicted in LRU order like blocks. It is for
// data derived from blobs (layerindex keeps tar indexes and gzip
// checkpoints here); name is any string, conventionally "<blob key>.<kind>".
// Without a disk tier PutFile does nothing and returns nil.
func (c *Cache) PutFile(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.store.disk == nil {
		return nil
	}
	if name == "" {
		return errors.New("layercache: put file: empty name")
	}
	return c.store.disk.write(fileRel(name), data)
}

// GetFile returns what PutFile stored under name. The error wraps
// fs.ErrNotExist when there is no disk tier, the file was never stored or
// was evicted, or it failed verification (then it is removed).
func (c *Cache) GetFile(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.store.disk == nil {
		return nil, fmt.Errorf("layercache: get file %q: no disk tier: %w", name, fs.ErrNotExist)
	}
	data, err := c.store.disk.read(fileRel(name), -1)
	if err != nil {
		if errors.Is(err, errBadFile) {
			err = fmt.Errorf("%w (%v)", fs.ErrNotExist, err)
		}
		return nil, fmt.Errorf("layercache: get file %q: %w", name, err)
	}
	return data, nil
}

// RemoveFile deletes what PutFile stored under name; a missing file is not
// an error.
func (c *Cache) RemoveFile(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.store.disk == nil {
		return nil
	}
	rel := fileRel(name)
	c.store.disk.forget(rel)
	if err := os.Remove(filepath.Join(c.store.disk.dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("layercache: remove file %q: %w", name, err)
	}
	return nil
}
