package layercache

import (
	"sync"
	"sync/atomic"
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
