package layerindex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// tocChunk is one piece of a regular file's data that a layer's TOC
// locates in the blob (eStargz, zstd:chunked) and gives a digest of.
type tocChunk struct {
	Offset, End   int64 // the compressed bytes holding the chunk: blob bytes [Offset, End)
	Inner         int64 // the chunk's uncompressed offset inside them (eStargz: a gzip member's later chunk)
	FileOff, Size int64 // where the chunk lies in its file
	Digest        digest.Digest
}

// chunkStore reads a layer's file chunks through its TOC: each chunk's
// compressed range is fetched once, decoded by the format's decode,
// checked against the chunk's digest, and kept in the Manager's small
// chunk cache. Nothing is handed out before its digest matched.
type chunkStore struct {
	src    blobSource                   // the blob the chunks are read from
	cache  *lru.Cache[chunkKey, []byte] // verified chunks, the Manager's
	decode func(comp []byte, c tocChunk) ([]byte, error)

	// spans notes the read spans (ReadSize pieces of the blob) small
	// chunk reads have fetched exactly: a second small read in one
	// means its neighbours are being read too (find, tar, many readers),
	// and the whole span is worth fetching once instead.
	spansMu sync.Mutex
	spans   map[int64]bool
}

type chunkKey struct {
	key        string
	off, inner int64
}

// openFile is a reader of the file name of size bytes made of chunks
// (sorted by FileOff).
func (cs *chunkStore) openFile(name string, size int64, chunks []tocChunk) *chunkedFile {
	return &chunkedFile{cs: cs, name: name, size: size, chunks: chunks}
}

// chunkedFile is a regular file read chunk by chunk.
type chunkedFile struct {
	cs     *chunkStore
	name   string
	size   int64
	chunks []tocChunk
}

func (f *chunkedFile) Size() int64 { return f.size }

func (f *chunkedFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", f.cs.src.key, off)
	}
	if err := f.fetchAhead(ctx, off, int64(len(p))); err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= f.size {
			return n, io.EOF
		}
		i := f.chunkAt(o)
		if i < 0 {
			return n, fmt.Errorf("layer %s: %q: %w: no chunk at offset %d", f.cs.src.key, f.name, errCorrupt, o)
		}
		c := f.chunks[i]
		data, err := f.cs.chunk(ctx, c, f.name)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[o-c.FileOff:])
	}
	return n, nil
}

// chunkAt returns the index of the chunk holding file offset o, or -1.
func (f *chunkedFile) chunkAt(o int64) int {
	i := sort.Search(len(f.chunks), func(i int) bool { return f.chunks[i].FileOff > o }) - 1
	if i < 0 || o >= f.chunks[i].FileOff+f.chunks[i].Size {
		return -1
	}
	return i
}

// fetchAhead fetches the chunks a read of [off, off+n) needs, when there
// are several not cached yet that lie one after another in the blob, with
// one request for all of them rather than a request each (a FUSE read of
// 128 KiB spans eight chunks of a layer built with 16 KiB chunks).
func (f *chunkedFile) fetchAhead(ctx context.Context, off, n int64) error {
	end := min(off+n, f.size)
	if off >= end {
		return nil
	}
	first, last := f.chunkAt(off), f.chunkAt(end-1)
	if first < 0 || last <= first {
		return nil // one chunk (or a bad offset ReadAt reports): nothing to merge
	}
	var run []tocChunk
	flush := func() error {
		defer func() { run = run[:0] }()
		if len(run) < 2 {
			return nil
		}
		from, to := run[0].Offset, run[len(run)-1].End
		comp := make([]byte, to-from)
		if err := f.cs.readCompressed(ctx, comp, from); err != nil {
			return err
		}
		for _, c := range run {
			if _, err := f.cs.decodeChecked(comp[c.Offset-from:c.End-from], c, f.name); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range f.chunks[first : last+1] {
		if b, ok := f.cs.cache.Peek(chunkKey{f.cs.src.key, c.Offset, c.Inner}); ok && int64(len(b)) == c.Size {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if len(run) > 0 {
			prev := run[len(run)-1]
			if c.Offset == prev.Offset && c.Inner > prev.Inner {
				continue // a later piece of the same compressed range
			}
			// A run stays well within the chunk cache, or its first
			// chunks would be gone before the read copies them.
			if c.Offset != prev.End || len(run) >= maxCachedChunks/2 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		run = append(run, c)
	}
	return flush()
}

func (cs *chunkStore) chunk(ctx context.Context, c tocChunk, name string) ([]byte, error) {
	k := chunkKey{cs.src.key, c.Offset, c.Inner}
	if b, ok := cs.cache.Get(k); ok && int64(len(b)) == c.Size {
		return b, nil
	}
	comp := make([]byte, c.End-c.Offset)
	if err := cs.readCompressed(ctx, comp, c.Offset); err != nil {
		return nil, err
	}
	return cs.decodeChecked(comp, c, name)
}

// readCompressed reads blob bytes at off. The first small read (less than
// a read span: a small file's chunks) in a span of the blob is fetched
// exactly: the cache's blocks around it would mostly hold other files. A
// later one in the same span, or a large read, goes through the cache's
// blocks, their readahead and their sharing between readers, which reads
// of many files, and a sequential read of a large file, want.
func (cs *chunkStore) readCompressed(ctx context.Context, p []byte, off int64) error {
	read := cs.src.blob.ReadAt
	if span := cs.src.readSize; int64(len(p)) < span && cs.firstInSpans(off/span, (off+int64(len(p))-1)/span) {
		read = cs.src.blob.ReadExact
	}
	if _, err := read(ctx, p, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("layer %s: read chunk at %d: %w", cs.src.key, off, err)
	}
	return nil
}

// firstInSpans reports whether no small read touched spans [a, b] before,
// and notes that one does now.
func (cs *chunkStore) firstInSpans(a, b int64) bool {
	cs.spansMu.Lock()
	defer cs.spansMu.Unlock()
	if cs.spans == nil {
		cs.spans = map[int64]bool{}
	}
	first := true
	for i := a; i <= b; i++ {
		if cs.spans[i] {
			first = false
		}
		cs.spans[i] = true
	}
	return first
}

// decodeChecked decodes chunk c from comp, its compressed range, checks it
// against its TOC digest and caches it.
func (cs *chunkStore) decodeChecked(comp []byte, c tocChunk, name string) ([]byte, error) {
	data, err := cs.decode(comp, c)
	if err == nil && int64(len(data)) != c.Size {
		err = fmt.Errorf("%d bytes, the TOC says %d", len(data), c.Size)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: chunk at %d of %q: %w: %w", cs.src.key, c.Offset, name, errCorrupt, err)
	}
	if got := c.Digest.Algorithm().FromBytes(data); got != c.Digest {
		return nil, fmt.Errorf("layer %s: chunk at %d of %q: %w: digest %s, the TOC says %s", cs.src.key, c.Offset, name, errCorrupt, got, c.Digest)
	}
	cs.cache.Add(chunkKey{cs.src.key, c.Offset, c.Inner}, data)
	return data, nil
}
