package layerindex

import (
	"bytes"
	"context"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
)

var _ FileStore = (*layercache.Cache)(nil)

// Indexes persisted in layercache's disk tier (so they count against its
// bound) serve a later Manager over the same cache directory with no blob
// read: every format, eStargz TOCs included.
func TestIndexesInCacheStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tarData, files := randomTree(t, 71, 20, 50<<10)
	sg, _ := buildStargz(t, tarData, 16<<10)
	type blobCase struct {
		name string
		blob []byte
	}
	cases := []blobCase{{"estargz", sg}}
	for _, c := range blobCases(t, tarData) {
		cases = append(cases, blobCase{c.name, c.blob})
	}
	quiet := logrus.New()
	quiet.SetLevel(logrus.PanicLevel)
	openCache := func() *layercache.Cache {
		c, err := layercache.New(layercache.Options{DiskDir: dir, DiskBytes: 64 << 20, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := openCache()
	for _, tc := range cases {
		m := newTestManager(t, Options{Store: c1})
		if _, err := m.Layer("sha256:"+tc.name, UncachedBlob(newMemBlob(tc.blob)), LayerOptions{}).Index(ctx); err != nil {
			t.Fatalf("%s: Index: %v", tc.name, err)
		}
	}
	c1.Close()

	c2 := openCache()
	defer c2.Close()
	if st := c2.Stats(); st.Disk.Files < int64(len(cases)) {
		t.Errorf("cache files after indexing %d layers: got %d, want the indexes counted", len(cases), st.Disk.Files)
	}
	for _, tc := range cases {
		blob := newMemBlob(tc.blob)
		l := newTestManager(t, Options{Store: c2}).Layer("sha256:"+tc.name, UncachedBlob(blob), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			t.Fatalf("%s: Index from the cache: %v", tc.name, err)
		}
		if calls, got := blob.counts(); calls != 0 {
			t.Errorf("%s: Index with a persisted index read %d blob bytes in %d reads, want none", tc.name, got, calls)
		}
		e, _ := x.Lookup(cleanName(files[5].hdr.Name))
		if got := readFile(ctx, t, l, e); !bytes.Equal(got, files[5].body) {
			t.Errorf("%s: file read through the persisted index: wrong bytes", tc.name)
		}
	}
}
