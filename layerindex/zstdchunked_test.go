package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/regfs/regfs/registry/registrytest"
)

// zstdChunkedFiles is a tree with what a TOC must carry: small, empty and
// multi-chunk files, a hardlink, a symlink, xattrs, setuid, a device, and a
// path written twice.
func zstdChunkedFiles(rng *rand.Rand) []tarFile {
	files := []tarFile{dir("etc/"), reg("etc/small.conf", []byte("hello=1\n")), reg("etc/empty", nil), dir("usr/"), dir("usr/lib/")}
	for i := 0; i < 8; i++ {
		files = append(files, reg("usr/lib/big"+fmtInt(i), content(rng, 100<<10+i*777)))
	}
	xa := reg("etc/xattr", []byte("x"))
	xa.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.test": "value"}
	xa.hdr.Mode = 0o4755
	dev := tarFile{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	files = append(files, xa, dev,
		tarFile{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "etc/hard", Linkname: "etc/small.conf", Mode: 0o644}},
		tarFile{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/sym", Linkname: "../usr/lib/big1", Mode: 0o777}},
		reg("usr/lib/big2", []byte("replaced\n")))
	return files
}

func buildZstdChunked(t testing.TB, tarData []byte, chunk int) ([]byte, map[string]string) {
	t.Helper()
	blob, ann, err := registrytest.BuildZstdChunked(tarData, chunk)
	if err != nil {
		t.Fatalf("BuildZstdChunked: %v", err)
	}
	return blob, ann
}

// TestZstdChunked: the TOC alone gives the same entries as a pass over the
// tar, each file reads back its bytes fetching only its own frames, and
// the tar stream still decodes as plain zstd.
func TestZstdChunked(t *testing.T) {
	ctx := context.Background()
	files := zstdChunkedFiles(rand.New(rand.NewSource(5)))
	tarData := makeTar(t, files)
	blobData, ann := buildZstdChunked(t, tarData, 16<<10)

	m := newTestManager(t, Options{})
	want, err := m.Layer("plain", UncachedBlob(newMemBlob(tarData)), LayerOptions{}).Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, annotated := range []bool{true, false} {
		blob := newMemBlob(blobData)
		lo := LayerOptions{}
		if annotated {
			lo.ZstdChunkedChecksum = ann[ZstdChunkedChecksumAnnotation]
			lo.ZstdChunkedPosition = ann[ZstdChunkedPositionAnnotation]
		}
		l := m.Layer("zc-"+fmtInt(len(lo.ZstdChunkedPosition)), UncachedBlob(blob), lo)
		x, err := l.Index(ctx)
		if err != nil {
			t.Fatalf("annotated=%v: Index: %v", annotated, err)
		}
		if calls, got := blob.counts(); calls > 3 || got > int64(len(blobData))/10 {
			t.Errorf("annotated=%v: Index read %d bytes in %d reads, want footer and TOC only (blob %d)", annotated, got, calls, len(blobData))
		}
		if x.Len() != want.Len() {
			t.Errorf("annotated=%v: %d entries, the tar has %d", annotated, x.Len(), want.Len())
		}
		for _, we := range want.Entries() {
			e, ok := x.Lookup(we.Name)
			if !ok {
				t.Errorf("%s: missing", we.Name)
				continue
			}
			got, exp := *e, *we
			got.Offset, exp.Offset = 0, 0
			if !got.ModTime.Equal(exp.ModTime) {
				t.Errorf("%s: mtime %v, want %v", we.Name, got.ModTime, exp.ModTime)
			}
			got.ModTime = exp.ModTime
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("%s: got %+v, want %+v", we.Name, got, exp)
			}
		}
		small, _ := x.Lookup("etc/small.conf")
		blob.reset()
		if b := readFile(ctx, t, l, small); string(b) != "hello=1\n" {
			t.Errorf("small file: got %q", b)
		}
		if calls, got := blob.counts(); calls != 1 || got > 256 {
			t.Errorf("small file read fetched %d bytes in %d reads, want its one frame", got, calls)
		}
		for _, f := range files {
			e, _ := x.Lookup(cleanName(f.hdr.Name))
			if e == nil || (e.Type != tar.TypeReg && e.Type != tar.TypeLink) {
				continue
			}
			body := f.body
			if f.hdr.Typeflag == tar.TypeLink {
				body = []byte("hello=1\n")
			}
			if f.hdr.Name == "usr/lib/big2" {
				body = []byte("replaced\n")
			}
			if b := readFile(ctx, t, l, e); !bytes.Equal(b, body) {
				t.Fatalf("%s: wrong content (%d bytes, want %d)", f.hdr.Name, len(b), len(body))
			}
		}
		// The tar stream decodes as plain zstd: skippable frames are skipped.
		size, err := l.TarSize(ctx)
		if err != nil || size != int64(len(tarData)) {
			t.Fatalf("TarSize: got %d, %v; want %d", size, err, len(tarData))
		}
		got := make([]byte, size)
		if n, err := l.TarReadAt(ctx, got, 0); n != len(got) || !bytes.Equal(got, tarData) {
			t.Errorf("layer.tar: %d bytes, %v; equal %v", n, err, bytes.Equal(got, tarData))
		}
	}
}

// TestZstdChunkedCorruptChunk: a chunk whose frame decodes to other bytes,
// or fails to decode, is an error (errCorrupt, EIO in fs/), never data.
func TestZstdChunkedCorruptChunk(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(6))
	tarData := makeTar(t, []tarFile{reg("a", content(rng, 40<<10)), reg("b", bytes.Repeat([]byte("abc"), 5000))})
	blobData, ann := buildZstdChunked(t, tarData, 16<<10)
	lo := LayerOptions{ZstdChunkedChecksum: ann[ZstdChunkedChecksumAnnotation], ZstdChunkedPosition: ann[ZstdChunkedPositionAnnotation]}
	for _, name := range []string{"a", "b"} {
		for _, at := range []int64{0, 5, 20, -8} {
			m := newTestManager(t, Options{})
			bad := append([]byte(nil), blobData...)
			l := m.Layer("bad", UncachedBlob(newMemBlob(bad)), lo)
			x, err := l.Index(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := x.Lookup(name)
			zc, _ := l.zstdChunked(ctx)
			c := zc.chunks[name][0]
			pos := c.Offset + at
			if at < 0 {
				pos = c.End + at
			}
			bad[pos] ^= 0x55
			r, err := l.OpenFile(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, e.Size)
			if n, err := r.ReadAt(ctx, buf, 0); err == nil || !errors.Is(err, errCorrupt) || n != 0 {
				t.Errorf("%s, byte %d of its first frame flipped: got %d bytes, %v; want 0 and errCorrupt", name, at, n, err)
			}
		}
	}
}

// TestZstdChunkedBadTOC: a TOC that does not match its checksum, or lies
// about where files are, fails Index with an error.
func TestZstdChunkedBadTOC(t *testing.T) {
	ctx := context.Background()
	tarData := makeTar(t, []tarFile{reg("a", []byte("hello"))})
	blobData, ann := buildZstdChunked(t, tarData, 16<<10)
	pos := ann[ZstdChunkedPositionAnnotation]
	for name, lo := range map[string]LayerOptions{
		"wrong checksum":      {ZstdChunkedChecksum: "sha256:" + strings.Repeat("0", 64)},
		"position past end":   {ZstdChunkedPosition: "1000000:10:10:1"},
		"position wrong type": {ZstdChunkedPosition: strings.TrimSuffix(pos, "1") + "2"},
		"position garbage":    {ZstdChunkedPosition: "a:b"},
	} {
		m := newTestManager(t, Options{})
		if _, err := m.Layer("x", UncachedBlob(newMemBlob(blobData)), lo).Index(ctx); err == nil {
			t.Errorf("%s: Index: got no error", name)
		}
	}
}

// TestZstdChunkedLargeChunk: a file in one chunk larger than a chunk is
// held in memory is read through the tar stream, bytes intact.
func TestZstdChunkedLargeChunk(t *testing.T) {
	ctx := context.Background()
	body := content(rand.New(rand.NewSource(8)), maxZstdChunk+1000)
	tarData := makeTar(t, []tarFile{reg("small", []byte("s")), reg("large", body)})
	blobData, _ := buildZstdChunked(t, tarData, 1<<30)
	m := newTestManager(t, Options{})
	l := m.Layer("large", UncachedBlob(newMemBlob(blobData)), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := x.Lookup("large")
	if b := readFile(ctx, t, l, e); !bytes.Equal(b, body) {
		t.Errorf("large: wrong content")
	}
}
