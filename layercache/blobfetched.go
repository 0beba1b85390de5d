package layercache

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/regfs/regfs/blobio"
)

// fetchedBlobs counts, per blob key, the bytes read from the blob's Sources:
// what this Cache fetched of each blob (for status files: how much of a
// layer a mount has pulled).
type fetchedBlobs struct{ m sync.Map } // key → *atomic.Int64

func (f *fetchedBlobs) counter(key string) *atomic.Int64 {
	if c, ok := f.m.Load(key); ok {
		return c.(*atomic.Int64)
	}
	c, _ := f.m.LoadOrStore(key, new(atomic.Int64))
	return c.(*atomic.Int64)
}

func (f *fetchedBlobs) get(key string) int64 {
	if c, ok := f.m.Load(key); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// BlobFetched is how many bytes of the blob key (blobio.Source.Key, the
// digest of a v2 blob) this Cache has read from
// its Sources since New (ranged reads and streams alike; a block fetched
// twice counts twice). No I/O.
func (c *Cache) BlobFetched(key string) int64 { return c.store.fetched.get(key) }

// countingSource is a Source whose reads add to n. Embedding passes every
// other method of the Source through.
type countingSource struct {
	blobio.Source
	n *atomic.Int64
}

func (s countingSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	got, err := s.Source.ReadAt(ctx, p, off)
	s.n.Add(int64(min(max(got, 0), len(p))))
	return got, err
}

func (s countingSource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	rc, err := s.Source.Open(ctx, off, n)
	if err != nil {
		return nil, err
	}
	return countingReader{rc, s.n}, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	got, err := r.ReadCloser.Read(p)
	r.n.Add(int64(got))
	return got, err
}
