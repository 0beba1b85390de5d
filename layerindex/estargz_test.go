package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func buildStargz(t testing.TB, tarData []byte, chunk int) ([]byte, string) {
	t.Helper()
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarData), 0, int64(len(tarData))), estargz.WithChunkSize(chunk))
	if err != nil {
		t.Fatalf("estargz.Build: %v", err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return data, b.TOCDigest().String()
}

func TestEStargz(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(21))
	files := []tarFile{dir("etc/"), reg("etc/small.conf", []byte("hello=1\n")), dir("usr/"), dir("usr/lib/")}
	bigSize := 300 << 10
	if raceEnabled {
		bigSize = 30 << 10
	}
	for i := 0; i < 20; i++ {
		files = append(files, reg("usr/lib/big"+fmtInt(i), content(rng, bigSize)))
	}
	link := tarFile{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "etc/hard", Linkname: "etc/small.conf", Mode: 0o644}}
	sym := tarFile{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/sym", Linkname: "../usr/lib/big1", Mode: 0o777}}
	xa := reg("etc/xattr", []byte("x"))
	xa.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.test": "value"}
	xa.hdr.Mode = 0o4755
	files = append(files, link, sym, xa)
	tarData := makeTar(t, files)
	blobData, tocDigest := buildStargz(t, tarData, 64<<10)

	for _, annotated := range []bool{true, false} {
		blob := newMemBlob(blobData)
		lo := LayerOptions{}
		if annotated {
			lo.TOCDigest = tocDigest
		}
		m := newTestManager(t, Options{})
		l := m.Layer("sha256:sg", UncachedBlob(blob), lo)
		x, err := l.Index(ctx)
		if err != nil {
			t.Fatalf("Index: %v", err)
		}
		calls, got := blob.counts()
		if calls > 3 || got > int64(len(blobData))/10 {
			t.Errorf("annotated=%v: Index read %d bytes in %d reads, want footer+TOC only (blob %d)", annotated, got, calls, len(blobData))
		}
		e, ok := x.Lookup("etc/small.conf")
		if !ok {
			t.Fatal("etc/small.conf missing")
		}
		blob.reset()
		if b := readFile(ctx, t, l, e); string(b) != "hello=1\n" {
			t.Errorf("small file: got %q", b)
		}
		if calls, got := blob.counts(); calls != 1 || got > 4096 {
			t.Errorf("small file read fetched %d bytes in %d reads, want its one chunk", got, calls)
		}
		if e, _ := x.Lookup("etc/hard"); e.Type != tar.TypeLink || e.Linkname != "etc/small.conf" {
			t.Errorf("etc/hard: got type %c link %q, want hardlink to etc/small.conf", e.Type, e.Linkname)
		} else if b := readFile(ctx, t, l, e); string(b) != "hello=1\n" {
			t.Errorf("hardlink content: got %q", b)
		}
		if e, _ := x.Lookup("etc/sym"); e.Type != tar.TypeSymlink || e.Linkname != "../usr/lib/big1" {
			t.Errorf("etc/sym: got %c %q", e.Type, e.Linkname)
		}
		if e, _ := x.Lookup("etc/xattr"); e.Xattrs["user.test"] != "value" || e.Mode.Perm() != 0o755 || e.Mode&(1<<23) == 0 {
			t.Errorf("etc/xattr: got xattrs %v mode %v, want user.test=value and setuid", e.Xattrs, e.Mode)
		}
		for _, f := range files[4:24] {
			e, _ := x.Lookup(f.hdr.Name)
			if b := readFile(ctx, t, l, e); !bytes.Equal(b, f.body) {
				t.Fatalf("%s: wrong content", f.hdr.Name)
			}
		}
		// The tar stream of an eStargz blob is still readable as gzip.
		if size, err := l.TarSize(ctx); err != nil || size < int64(len(tarData))-1024 {
			t.Errorf("TarSize: got %d, %v", size, err)
		}
	}

	// A wrong TOC digest is refused; a corrupted chunk is an error, not data.
	m := newTestManager(t, Options{})
	if _, err := m.Layer("bad-toc", UncachedBlob(newMemBlob(blobData)), LayerOptions{TOCDigest: "sha256:" + strings.Repeat("0", 64)}).Index(ctx); err == nil {
		t.Error("Index with a wrong TOC digest: got no error")
	}
	l := m.Layer("ok", UncachedBlob(newMemBlob(blobData)), LayerOptions{TOCDigest: tocDigest})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := x.Lookup("usr/lib/big3")
	sg, _ := l.stargz(ctx)
	ce := sg.chunks[e.Name][0]
	bad := append([]byte(nil), blobData...)
	// Rewrite the chunk with other content of the same size, validly compressed.
	bl := m.Layer("tampered", UncachedBlob(newMemBlob(bad)), LayerOptions{TOCDigest: tocDigest})
	if _, err := bl.Index(ctx); err != nil {
		t.Fatal(err)
	}
	bad[ce.Offset+20] ^= 0xff
	r, _ := bl.OpenFile(ctx, e)
	if n, err := r.ReadAt(ctx, make([]byte, 100), 0); err == nil {
		t.Errorf("read of a corrupted chunk: got %d bytes and no error", n)
	}
}

// TestEStargzPrefetchReadsOnlyTOC: getting an eStargz layer ready and
// reading one small file fetches the footer, the TOC and that file's chunk,
// never the rest of the blob (Prefetch once started a full index pass).
func TestEStargzPrefetchReadsOnlyTOC(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(7))
	files := []tarFile{dir("etc/"), reg("etc/small.conf", []byte("hello=1\n")), dir("usr/")}
	for i := 0; i < 16; i++ {
		files = append(files, reg("usr/big"+fmtInt(i), content(rng, 64<<10)))
	}
	blobData, tocDigest := buildStargz(t, makeTar(t, files), 32<<10)
	blob := newMemBlob(blobData)
	m := newTestManager(t, Options{})
	l := m.Layer("sha256:sg-prefetch", UncachedBlob(blob), LayerOptions{TOCDigest: tocDigest})
	l.Prefetch(ctx)
	l.Prefetch(ctx) // a second call while the first runs starts nothing more
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	e, ok := x.Lookup("etc/small.conf")
	if !ok {
		t.Fatal("etc/small.conf missing")
	}
	if b := readFile(ctx, t, l, e); string(b) != "hello=1\n" {
		t.Errorf("small file: got %q, want %q", b, "hello=1\n")
	}
	// Let any background pass run to its end before counting.
	deadline := time.Now().Add(10 * time.Second)
	for l.Progress().State == "building" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sg, err := l.stargz(ctx)
	if err != nil || sg == nil {
		t.Fatalf("stargz: got %v, %v", sg, err)
	}
	c := sg.chunks["etc/small.conf"][0]
	// The 4-byte magic probe, the footer, the TOC with the footer, the chunk.
	want := 4 + estargz.FooterSize + int64(len(sg.tail)) + (c.End - c.Offset)
	calls, got := blob.counts()
	if got > want || calls > 4 {
		t.Errorf("Prefetch+Index+read of one small file: got %d bytes in %d reads, want at most %d (magic, footer, TOC, one chunk) in 4; blob is %d", got, calls, want, len(blobData))
	}
	if p := l.Progress(); p.State != "ready" {
		t.Errorf("Progress after Prefetch: got %q, want ready", p.State)
	}
}

// exactBlob is a memBlob with ReadExact, as the block cache's Reader has.
type exactBlob struct {
	*memBlob
	exact int // ReadExact calls
}

func (b *exactBlob) ReadExact(ctx context.Context, p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.exact++
	b.mu.Unlock()
	return b.ReadAt(ctx, p, off)
}

// A read spanning several chunks not cached yet fetches them with one
// request; small reads (probe, footer, TOC, a small file's chunks) go by
// ReadExact, a chunk run larger than a read span by ReadAt.
func TestEStargzChunkReads(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(23))
	body := content(rng, 200<<10)
	blobData, tocDigest := buildStargz(t, makeTar(t, []tarFile{reg("f", body), reg("g", []byte("gg"))}), 16<<10)
	tests := []struct {
		name        string
		readSize    int64
		off, n      int64
		wantReads   int // blob reads for the data
		wantExact   bool
		wantMembers int // chunks cached after the read
	}{
		{"eight chunks in one exact read", 1 << 20, 0, 128 << 10, 1, true, 8},
		{"a read inside one chunk", 1 << 20, 20 << 10, 100, 1, true, 1},
		{"a run no smaller than a read span goes through the cache", 4 << 10, 16 << 10, 64 << 10, 1, false, 4},
		{"runs are bounded by the chunk cache", 1 << 20, 0, 200 << 10, 2, true, 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob := &exactBlob{memBlob: newMemBlob(blobData)}
			m := newTestManager(t, Options{ReadSize: tt.readSize})
			l := m.Layer("sha256:sg-chunks", blob, LayerOptions{TOCDigest: tocDigest})
			x, err := l.Index(ctx)
			if err != nil {
				t.Fatalf("Index: %v", err)
			}
			e, _ := x.Lookup("f")
			r, err := l.OpenFile(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			blob.reset()
			blob.exact = 0
			p := make([]byte, tt.n)
			if n, err := r.ReadAt(ctx, p, tt.off); int64(n) != tt.n || err != nil {
				t.Fatalf("ReadAt(%d at %d): got %d, %v", tt.n, tt.off, n, err)
			}
			if !bytes.Equal(p, body[tt.off:tt.off+tt.n]) {
				t.Fatalf("ReadAt(%d at %d): bytes differ from the file", tt.n, tt.off)
			}
			if calls, _ := blob.counts(); calls != tt.wantReads {
				t.Errorf("blob reads: got %d want %d (%v)", calls, tt.wantReads, blob.log)
			}
			if got := blob.exact > 0; got != tt.wantExact {
				t.Errorf("read by ReadExact: got %v want %v (%v)", got, tt.wantExact, blob.log)
			}
			if got := m.chunks.Len(); got != tt.wantMembers {
				t.Errorf("chunks cached: got %d want %d", got, tt.wantMembers)
			}
		})
	}
}

// The first small read in a span of the blob is exact; a second small read
// in the same span (neighbouring files are being read) takes the cache's
// blocks.
func TestEStargzSecondReadInSpanUsesBlocks(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(29))
	files := []tarFile{reg("a", content(rng, 20<<10)), reg("b", content(rng, 20<<10))}
	for i := 0; i < 8; i++ {
		files = append(files, reg("pad"+fmtInt(i), bytes.Repeat([]byte{byte(rng.Intn(256))}, 1)))
	}
	blobData, tocDigest := buildStargz(t, makeTar(t, files), 64<<10)
	blob := &exactBlob{memBlob: newMemBlob(blobData)}
	m := newTestManager(t, Options{ReadSize: 1 << 20})
	l := m.Layer("sha256:sg-spans", blob, LayerOptions{TOCDigest: tocDigest})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		wantExact bool
	}{{"a", true}, {"b", false}}
	for _, s := range steps {
		e, _ := x.Lookup(s.name)
		blob.mu.Lock()
		exact0 := blob.exact
		blob.mu.Unlock()
		if got := readFile(ctx, t, l, e); len(got) != int(e.Size) {
			t.Fatalf("%s: got %d bytes want %d", s.name, len(got), e.Size)
		}
		blob.mu.Lock()
		exact := blob.exact > exact0
		blob.mu.Unlock()
		if exact != s.wantExact {
			t.Errorf("read of %s by ReadExact: got %v want %v", s.name, exact, s.wantExact)
		}
	}
}
