package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// testParts is one "mount"'s cache and index manager over a --cache-dir,
// built the way cmd/regfs's newParts builds them: the disk tier under
// <cache-dir>/blocks, the layer indexes persisted in that disk tier.
type testParts struct {
	cache *layercache.Cache
	index *layerindex.Manager
}

const (
	testBlock   = 64 << 10
	testSpacing = 256 << 10
)

func newTestParts(t *testing.T, cacheDir string) *testParts {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	// No readahead: a read then fetches exactly the blocks the inflater
	// asks for, and the bound below needs no allowance for a stream the
	// server writes ahead of.
	cache, err := layercache.New(layercache.Options{BlockSize: testBlock, MemoryBytes: 16 << 20, Readahead: -1,
		DiskDir: filepath.Join(cacheDir, "blocks"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// A small checkpoint spacing: the test layer then has several spans
	// and one file's read needs a fraction of the blob.
	index, err := layerindex.NewManager(layerindex.Options{Store: cache, ReadSize: testBlock, Spacing: testSpacing, Logger: log})
	if err != nil {
		cache.Close()
		t.Fatal(err)
	}
	return &testParts{cache: cache, index: index}
}

// TestDropBlocksKeepsIndexes: after dropBlocks, a new "mount" over the same
// cache dir loads the persisted index without reading the blob and reads one
// small file with a fraction of the blob's bytes. Removing the whole
// <cache-dir>/blocks directory (what the bench did) also removed the indexes,
// so the next mount ran a full index pass: the whole blob.
func TestDropBlocksKeepsIndexes(t *testing.T) {
	ctx := context.Background()
	reg := registrytest.StartRegistry(t)
	entries := smallFileEntries(1500, 5)
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(reg).PushImage(ctx, benchRepo, img, tagGzip); err != nil {
		t.Fatal(err)
	}
	client, err := registry.New(ctx, reg.Host, registry.Options{API: registry.APIV2, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := client.Resolve(ctx, benchRepo, tagGzip, registry.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resolved.Layers) != 1 {
		t.Fatalf("layers: got %d, want 1", len(resolved.Layers))
	}
	// The file to read: a small one in the middle of the layer.
	var target registrytest.Entry
	for _, e := range entries[len(entries)/2:] {
		if strings.HasSuffix(e.Name, ".txt") && e.Size() >= 1024 && e.Size() <= 8192 {
			target = e
			break
		}
	}
	if target.Name == "" {
		t.Fatal("no small file in the second half of the layer")
	}

	// open returns the layer through fresh parts over cacheDir.
	open := func(p *testParts) *layerindex.Layer {
		blob, err := client.OpenBlob(ctx, benchRepo, resolved.Layers[0])
		if err != nil {
			t.Fatal(err)
		}
		return p.index.Layer(blob.Key(), p.cache.Open(blob), layerindex.LayerOptions{})
	}
	readTarget := func(layer *layerindex.Layer) {
		t.Helper()
		x, err := layer.Index(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := x.Lookup(target.Name)
		if !ok {
			t.Fatalf("lookup %s: not in the index", target.Name)
		}
		r, err := layer.OpenFile(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.Size())
		if _, err := r.ReadAt(ctx, got, 0); err != nil {
			t.Fatalf("read %s: %v", target.Name, err)
		}
		if want := target.Data(); !bytes.Equal(got, want) {
			t.Fatalf("read %s: got %d bytes differing from the layer's %d", target.Name, len(got), len(want))
		}
	}

	cacheDir := t.TempDir()
	first := newTestParts(t, cacheDir)
	readTarget(open(first)) // index pass: the whole blob, index persisted
	if err := first.cache.Close(); err != nil {
		t.Fatal(err)
	}

	blocks, indexes, err := dropBlocks(cacheDir)
	if err != nil {
		t.Fatalf("dropBlocks: %v", err)
	}
	if blocks == 0 || indexes != 1 {
		t.Errorf("dropBlocks: got %d blocks, %d indexes; want some blocks and 1 index", blocks, indexes)
	}

	second := newTestParts(t, cacheDir)
	defer second.cache.Close()
	layer := open(second)
	before := reg.Stats().BlobBytesServed
	if _, err := layer.Index(ctx); err != nil {
		t.Fatal(err)
	}
	if got := reg.Stats().BlobBytesServed - before; got != 0 {
		t.Errorf("loading the persisted index: got %d blob bytes fetched, want 0 (the index was not kept)", got)
	}
	readTarget(layer)
	got := reg.Stats().BlobBytesServed - before
	t.Logf("after dropBlocks: %d blob bytes fetched to read %s (%d bytes) from a %d-byte blob", got, target.Name, target.Size(), l.Size)
	if got == 0 {
		t.Errorf("reading %s after dropBlocks: got 0 blob bytes fetched, want some (the blocks were not dropped)", target.Name)
	}
	// From the file's checkpoint: at most a span and the file, stored
	// about as large as they are (a third of the files do not compress),
	// rounded out to blocks.
	if limit := int64(testSpacing + 4*testBlock); got > limit {
		t.Errorf("reading %s after dropBlocks: got %d blob bytes fetched, want at most %d (a checkpoint span; the blob is %d)", target.Name, got, limit, l.Size)
	}
}

// dropBlocks refuses a cache dir that would make the row measure something
// else: nothing cached, or blocks without a persisted index.
func TestDropBlocksErrors(t *testing.T) {
	write := func(t *testing.T, dir string, names ...string) {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name        string
		files       []string
		missing     bool
		wantBlocks  int
		wantIndexes int
		wantErr     string
	}{
		{name: "missing dir", missing: true, wantErr: "no such file"},
		{name: "empty", wantErr: "found 0 block files and 0 persisted indexes"},
		{name: "blocks only", files: []string{"blocks/blocks/k/1_0.blk", "blocks/blocks/k/1_1.blk"}, wantBlocks: 2, wantErr: "found 2 block files and 0 persisted indexes"},
		{name: "index only", files: []string{"blocks/files/k.idx"}, wantIndexes: 1, wantErr: "found 0 block files and 1 persisted indexes"},
		{name: "both", files: []string{"blocks/blocks/k/1_0.blk", "blocks/files/k.idx", "blocks/files/s.toc"}, wantBlocks: 1, wantIndexes: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.missing {
				dir = filepath.Join(dir, "none")
			}
			write(t, dir, tc.files...)
			blocks, indexes, err := dropBlocks(dir)
			if blocks != tc.wantBlocks || indexes != tc.wantIndexes {
				t.Errorf("got %d blocks, %d indexes; want %d, %d", blocks, indexes, tc.wantBlocks, tc.wantIndexes)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got error %v, want one containing %q", err, tc.wantErr)
			}
			for _, n := range tc.files {
				_, statErr := os.Stat(filepath.Join(dir, n))
				if gone := statErr != nil; gone != strings.HasSuffix(n, ".blk") {
					t.Errorf("%s: removed=%v, want removed only if a block file", n, gone)
				}
			}
		})
	}
}
