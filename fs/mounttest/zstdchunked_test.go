package mounttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// pushZstdChunkedImage builds one zstd:chunked layer per entry list, lets
// tamper change the blobs (their digests follow), and pushes the image.
func pushZstdChunkedImage(t testing.TB, repo string, layers [][]registrytest.Entry, tamper func(*registrytest.Layer)) *registrytest.Image {
	t.Helper()
	var built []*registrytest.Layer
	for _, entries := range layers {
		l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries, Compression: registrytest.ZstdChunked})
		if err != nil {
			t.Fatal(err)
		}
		if tamper != nil {
			tamper(l)
			l.Digest, l.Size = digest.FromBytes(l.Blob), int64(len(l.Blob))
		}
		built = append(built, l)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: built})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(reg).PushImage(context.Background(), repo, img, "latest"); err != nil {
		t.Fatal(err)
	}
	return img
}

// zstdChunkedTOCEntry is what the tests read of a TOC entry.
type zstdChunkedTOCEntry struct {
	Type   string `json:"type"`
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
}

// zstdChunkedTOC decodes a zstd:chunked blob's TOC through its position
// annotation; it also returns the TOC's compressed size.
func zstdChunkedTOC(t testing.TB, l *registrytest.Layer) ([]zstdChunkedTOCEntry, int64) {
	t.Helper()
	pos := strings.Split(l.Annotations[registrytest.ZstdChunkedPositionAnnotation], ":")
	off, _ := strconv.ParseInt(pos[0], 10, 64)
	size, _ := strconv.ParseInt(pos[1], 10, 64)
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	js, err := dec.DecodeAll(l.Blob[off:off+size], nil)
	if err != nil {
		t.Fatal(err)
	}
	var toc struct {
		Entries []zstdChunkedTOCEntry `json:"entries"`
	}
	if err := json.Unmarshal(js, &toc); err != nil {
		t.Fatal(err)
	}
	return toc.Entries, size
}

// A zstd:chunked image shows in rootfs/ and every layers/<id>/fs/ the
// same tree, bytes and metadata as a plain extraction of its tars, and
// its layer.tar is the tar (diff_id).
func TestZstdChunkedTrees(t *testing.T) {
	needFUSE(t)
	var layers [][]registrytest.Entry
	for _, l := range fixtures.Small.Layers {
		layers = append(layers, l.Entries)
	}
	img := pushZstdChunkedImage(t, "test/zstd-chunked", layers, nil)
	mnt := mount(t, reg.Host, mountOpts{})
	dir := filepath.Join(mnt, "test/zstd-chunked:latest")
	compareTrees(t, "rootfs", describe(t, filepath.Join(dir, "rootfs")), flatten(t, img.Layers, -1))
	ids := chainIDs(img.DiffIDs)
	for i := range img.Layers {
		compareTrees(t, "layer "+ids[i][:12], describe(t, filepath.Join(dir, "layers", ids[i], "fs")), flatten(t, img.Layers, i))
		if got := sha256File(t, filepath.Join(dir, "layers", ids[i], "layer.tar")); got != img.DiffIDs[i] {
			t.Errorf("layer %d layer.tar: got %s, want %s", i+1, got, img.DiffIDs[i])
		}
	}
}

// The first read of one small file under rootfs/ of a zstd:chunked image,
// on a fresh mount with an empty cache, fetches the format probe, the TOC
// and that file's frame: not the rest of the blob.
func TestZstdChunkedRootfsReadIsLazy(t *testing.T) {
	needFUSE(t)
	img := pushZstdChunkedImage(t, "test/zstd-chunked-lazy", [][]registrytest.Entry{registrytest.LargeEntries(7, 16<<20)}, nil)
	small := smallFile(t, img.Layers[0])
	p := startCacheMount(t, reg.Host, t.TempDir(), "--block-size", "1M")
	requests0 := len(reg.Requests())
	got, err := os.ReadFile(filepath.Join(p.mnt, "test/zstd-chunked-lazy:latest/rootfs", small.Name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, small.Data()) {
		t.Fatalf("%s: got %d bytes that differ from the layer's %d", small.Name, len(got), len(small.Data()))
	}
	_, tocSize := zstdChunkedTOC(t, img.Layers[0])
	want := 4 + tocSize + small.Size() + 1<<10 // probe, TOC, the file's frames
	var fetched int64
	var gets int
	for _, q := range reg.Requests()[requests0:] {
		if isBlobGET(q) && !strings.HasSuffix(q.Path, img.ConfigDigest.String()) {
			gets++
			fetched += q.Bytes
		}
	}
	t.Logf("first read of %s (%d bytes): %d blob bytes of %d (%.3f %%) in %d GETs", small.Name, small.Size(), fetched, img.Layers[0].Size, 100*float64(fetched)/float64(img.Layers[0].Size), gets)
	if fetched > want || gets > 4 {
		t.Errorf("blob bytes fetched for one small file: got %d in %d GETs, want at most %d (probe, TOC, frames) in 4", fetched, gets, want)
	}
}

// A chunk whose bytes do not match its TOC digest gives EIO, not bytes;
// the layer's other files still read.
func TestZstdChunkedCorruptChunkIsEIO(t *testing.T) {
	needFUSE(t)
	entries := []registrytest.Entry{
		registrytest.File("etc/good", "good file\n"),
		registrytest.FileBytes("etc/bad", bytes.Repeat([]byte("regfs "), 4000)),
	}
	var badOff int64
	pushZstdChunkedImage(t, "test/zstd-chunked-bad", [][]registrytest.Entry{entries}, func(l *registrytest.Layer) {
		toc, _ := zstdChunkedTOC(t, l)
		for _, e := range toc {
			if e.Name == "etc/bad" && e.Type == "reg" {
				badOff = e.Offset
			}
		}
		// Past the frame header, inside the compressed content.
		l.Blob[badOff+12] ^= 0x20
	})
	if badOff == 0 {
		t.Fatal("etc/bad not in the TOC")
	}
	mnt := mount(t, reg.Host, mountOpts{})
	root := filepath.Join(mnt, "test/zstd-chunked-bad:latest/rootfs")
	if got, err := os.ReadFile(filepath.Join(root, "etc/good")); err != nil || string(got) != "good file\n" {
		t.Errorf("etc/good: got %q, %v", got, err)
	}
	got, err := os.ReadFile(filepath.Join(root, "etc/bad"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("etc/bad with a corrupted chunk: got %d bytes, %v; want EIO", len(got), err)
	}
}
