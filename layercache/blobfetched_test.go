package layercache

import (
	"context"
	"testing"
)

func TestBlobFetched(t *testing.T) {
	const bs = 4096
	c := newTestCache(t, Options{BlockSize: bs, Readahead: -1})
	src := newFakeSource(keyN(1), 10*bs+100, 1)
	r := c.Open(src)
	defer r.Close()
	buf := make([]byte, 3*bs)
	if _, err := r.ReadAt(context.Background(), buf, 2*bs); err != nil {
		t.Fatal(err)
	}
	if got := c.BlobFetched(keyN(1)); got != 3*bs {
		t.Errorf("after reading 3 blocks: got %d bytes fetched, want %d", got, 3*bs)
	}
	if _, err := r.ReadAt(context.Background(), buf, 2*bs); err != nil { // from memory
		t.Fatal(err)
	}
	whole := make([]byte, src.Size())
	if _, err := r.ReadAt(context.Background(), whole, 0); err != nil {
		t.Fatal(err)
	}
	if got := c.BlobFetched(keyN(1)); got != src.Size() {
		t.Errorf("after reading it all: got %d bytes fetched, want the blob's %d", got, src.Size())
	}
	if got := c.BlobFetched(keyN(2)); got != 0 {
		t.Errorf("a blob never read: got %d bytes fetched, want 0", got)
	}
}
