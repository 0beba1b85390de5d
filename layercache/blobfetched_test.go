package layercache

import (
	"context"
	"testing"
)

// BlobFetched counts what came from the Source, by ranges and by streams,
// and not what came from memory.
func TestBlobFetched(t *testing.T) {
	const bs = 4096
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
	ranged := newFakeSource(keyN(1), 10*bs+100, 1)
	streamed := &streamingSource{fakeSource: newFakeSource(keyN(2), 10*bs+100, 2)}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    *Reader
		key  string
		size int64
	}{
		{"ranged", c.OpenWith(ranged, rangedOpts), keyN(1), ranged.Size()},
		{"streamed", c.Open(streamed), keyN(2), streamed.Size()},
	} {
		defer tc.r.Close()
		buf := make([]byte, 3*bs)
		if _, err := tc.r.ReadAt(ctx, buf, 2*bs); err != nil {
			t.Fatal(err)
		}
		if got := c.BlobFetched(tc.key); got != 3*bs {
			t.Errorf("%s: after reading 3 blocks: got %d bytes fetched, want %d", tc.name, got, 3*bs)
		}
		if _, err := tc.r.ReadAt(ctx, buf, 2*bs); err != nil { // from memory
			t.Fatal(err)
		}
		whole := make([]byte, tc.size)
		if _, err := tc.r.ReadAt(ctx, whole, 0); err != nil {
			t.Fatal(err)
		}
		if got := c.BlobFetched(tc.key); got != tc.size {
			t.Errorf("%s: after reading it all: got %d bytes fetched, want the blob's %d", tc.name, got, tc.size)
		}
	}
	if got := c.BlobFetched(keyN(3)); got != 0 {
		t.Errorf("a blob never read: got %d bytes fetched, want 0", got)
	}
}
