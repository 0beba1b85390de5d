package layerindex

import (
	stdgzip "compress/gzip"
	"io"

	"archive/tar"
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/klauspost/compress/gzip"
)

// A gzip member header may carry a name, comment and extra field of any
// length; the index pass and every later read (from the start or from a
// checkpoint) skip it alike.
func TestGzipLongHeaderFields(t *testing.T) {
	ctx := context.Background()
	tarData, files := randomTree(t, 5, 20, 300<<10)
	for _, tc := range []struct {
		name string
		hdr  gzip.Header
	}{
		{"comment", gzip.Header{Comment: strings.Repeat("c", 4000)}},
		{"name", gzip.Header{Name: strings.Repeat("n", 1000)}},
		{"extra", gzip.Header{Extra: bytes.Repeat([]byte("x"), 60000)}},
		{"all", gzip.Header{Comment: strings.Repeat("c", 513), Name: strings.Repeat("n", 513), Extra: bytes.Repeat([]byte("x"), 513)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Header = tc.hdr
			zw.Write(tarData)
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			for _, opts := range []Options{{Spacing: 64 << 10, ReadSize: 64 << 10}, {}, {ReadSize: 4 << 10}, {Dir: t.TempDir()}} {
				l := newTestManager(t, opts).Layer("k", UncachedBlob(newMemBlob(buf.Bytes())), LayerOptions{})
				x, err := l.Index(ctx)
				if err != nil {
					t.Fatalf("Index: %v", err)
				}
				for _, f := range files {
					if f.hdr.Typeflag != tar.TypeReg {
						continue
					}
					e, ok := x.Lookup(f.hdr.Name)
					if !ok {
						t.Fatalf("%s: missing", f.hdr.Name)
					}
					if got := readFile(ctx, t, l, e); !bytes.Equal(got, f.body) {
						t.Fatalf("%s: content differs", f.hdr.Name)
					}
				}
			}
		})
	}
}

// longCommentGzip writes eStargz members whose gzip headers carry a long
// name and comment (RFC 1952 allows any length; Go's gzip.Reader refuses
// 512 bytes or more).
type longCommentGzip struct {
	*estargz.GzipCompressor
	*estargz.GzipDecompressor
}

func (longCommentGzip) Writer(w io.Writer) (estargz.WriteFlushCloser, error) {
	zw := stdgzip.NewWriter(w)
	zw.Header.Comment = strings.Repeat("c", 600)
	zw.Header.Name = strings.Repeat("n", 1000)
	return zw, nil
}

// Reader reads every member (estargz.Build reads its output back).
func (longCommentGzip) Reader(r io.Reader) (io.ReadCloser, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var out []byte
	for len(b) > 0 {
		m, err := newGzipMember(b)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(m)
		if err != nil {
			return nil, err
		}
		out = append(out, data...)
		b = b[len(b)-m.in.Len():]
	}
	return io.NopCloser(bytes.NewReader(out)), nil
}

// An eStargz blob whose chunk members have long header fields: its files
// read (they used to index through the TOC, then fail every read).
func TestEStargzLongGzipHeaders(t *testing.T) {
	ctx := context.Background()
	tarData, files := randomTree(t, 9, 12, 40<<10)
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarData), 0, int64(len(tarData))),
		estargz.WithChunkSize(8<<10), estargz.WithCompression(longCommentGzip{estargz.NewGzipCompressor(), new(estargz.GzipDecompressor)}))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(b)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(blob[:2000], []byte(strings.Repeat("c", 600))) {
		t.Fatal("the blob's first member has no long comment: the test builds the wrong blob")
	}
	l := newTestManager(t, Options{}).Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	if l.sgState.opened.Load() != true {
		t.Fatal("the blob was not read as eStargz")
	}
	for _, f := range files {
		if f.hdr.Typeflag != tar.TypeReg {
			continue
		}
		e, ok := x.Lookup(f.hdr.Name)
		if !ok {
			t.Fatalf("%s: missing", f.hdr.Name)
		}
		if got := readFile(ctx, t, l, e); !bytes.Equal(got, f.body) {
			t.Fatalf("%s: content differs", f.hdr.Name)
		}
	}
}
