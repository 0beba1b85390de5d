package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
)

// A layer may hardlink to a file of a layer below it: every way a blob is
// stored must index such a layer alike (the link shown as the tar has it,
// opening it a clear not-exist error). The merged tree's side of it is
// rootfs.TestHardlinkIntoLowerLayer.
func TestHardlinkIntoLowerLayer(t *testing.T) {
	ctx := context.Background()
	base := makeTar(t, []tarFile{dir("app/"), reg("app/main.sh", []byte("#!/bin/sh\necho main\n"))})
	upperFiles := []tarFile{
		reg("app/config.json", []byte(`{"debug": false}`+"\n")),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "app/main-link.sh", Linkname: "app/main.sh", Mode: 0o755}},
		// A link to an entry that comes later in the same tar.
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "app/early-link", Linkname: "app/late"}},
		reg("app/late", []byte("written after its link\n")),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "app/nowhere", Linkname: "no/such/file"}},
	}
	upper := makeTar(t, upperFiles)

	baseLayer := newTestManager(t, Options{}).Layer("base", UncachedBlob(newMemBlob(gzipOf(t, base, 6))), LayerOptions{})
	if _, err := baseLayer.Index(ctx); err != nil {
		t.Fatalf("base Index: %v", err)
	}

	type blobCase struct {
		name string
		blob []byte
		lo   LayerOptions
	}
	var cases []blobCase
	for _, c := range blobCases(t, upper) {
		cases = append(cases, blobCase{c.name, c.blob, LayerOptions{}})
	}
	sg, tocDigest := buildStargz(t, upper, 1<<10)
	cases = append(cases, blobCase{"estargz", sg, LayerOptions{}}, blobCase{"estargz-annotated", sg, LayerOptions{TOCDigest: tocDigest}})

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestManager(t, Options{}).Layer("upper", UncachedBlob(newMemBlob(tc.blob)), tc.lo)
			x, err := l.Index(ctx)
			if err != nil {
				t.Fatalf("Index: %v", err)
			}
			e, ok := x.Lookup("app/main-link.sh")
			if !ok {
				t.Fatal("app/main-link.sh: missing")
			}
			if e.Type != tar.TypeLink || e.Linkname != "app/main.sh" || e.Mode != 0o755 {
				t.Errorf("app/main-link.sh: got type %q link %q mode %v, want hardlink to app/main.sh mode 0755", e.Type, e.Linkname, e.Mode)
			}
			_, err = l.OpenFile(ctx, e)
			if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "app/main.sh") {
				t.Errorf("OpenFile(app/main-link.sh) in its own layer: got %v, want a not-exist error naming the target", err)
			}
			if e, _ := x.Lookup("app/early-link"); e == nil {
				t.Error("app/early-link: missing")
			} else if got := string(readFile(ctx, t, l, e)); got != "written after its link\n" {
				t.Errorf("app/early-link: got %q, want the later entry's content", got)
			}
			if e, _ := x.Lookup("app/nowhere"); e == nil || e.Type != tar.TypeLink {
				t.Errorf("app/nowhere: got %+v, want a hardlink entry", e)
			} else if _, err := l.OpenFile(ctx, e); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("OpenFile(app/nowhere): got %v, want not-exist", err)
			}
		})
	}
}

// The eStargz index shows what the blob's tar holds, like the gzip path:
// the TOC's own stargz.index.json entry and the landmark file included.
func TestEStargzMatchesGzipIndex(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 9, 30, 40<<10)
	blob, _ := buildStargz(t, tarData, 8<<10)
	sgl := newTestManager(t, Options{}).Layer("sg", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	sgIdx, err := sgl.Index(ctx)
	if err != nil {
		t.Fatalf("eStargz Index: %v", err)
	}
	// The same blob read as plain gzip: a Layer whose eStargz check is done and negative.
	gl := newTestManager(t, Options{}).Layer("gz", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	gl.sgState.sg.set(nil)
	gzIdx, err := gl.Index(ctx)
	if err != nil {
		t.Fatalf("gzip Index: %v", err)
	}
	if _, ok := sgIdx.Lookup("stargz.index.json"); !ok {
		t.Error("eStargz index: stargz.index.json missing")
	}
	if sgIdx.Len() != gzIdx.Len() {
		t.Errorf("entries: got %d through the TOC, want %d as through gzip", sgIdx.Len(), gzIdx.Len())
	}
	for _, g := range gzIdx.Entries() {
		s, ok := sgIdx.Lookup(g.Name)
		if !ok {
			t.Errorf("%q: missing from the eStargz index", g.Name)
			continue
		}
		if s.Type != g.Type || s.Mode != g.Mode || s.Size != g.Size || s.UID != g.UID || !s.ModTime.Equal(g.ModTime) || s.Linkname != g.Linkname {
			t.Errorf("%q: got %c %v size %d uid %d %v %q, want %c %v size %d uid %d %v %q", g.Name,
				s.Type, s.Mode, s.Size, s.UID, s.ModTime, s.Linkname, g.Type, g.Mode, g.Size, g.UID, g.ModTime, g.Linkname)
		}
		if g.Type == tar.TypeReg {
			if got, want := readFile(ctx, t, sgl, s), readFile(ctx, t, gl, g); string(got) != string(want) {
				t.Errorf("%q: eStargz content differs from the gzip stream's", g.Name)
			}
		}
	}
}

// A TOC that does not describe its blob is refused when the layer is
// opened, never served.
func TestEStargzBadTOC(t *testing.T) {
	sha := "sha256:" + strings.Repeat("a", 64)
	reg := func(name string, size, off int64, chunkDigest string) *estargz.TOCEntry {
		return &estargz.TOCEntry{Name: name, Type: "reg", Size: size, Offset: off, ChunkDigest: chunkDigest}
	}
	for _, tc := range []struct {
		name    string
		entries []*estargz.TOCEntry
		want    string
	}{
		{"ok", []*estargz.TOCEntry{reg("a", 10, 100, sha)}, ""},
		{"chunk first", []*estargz.TOCEntry{{Type: "chunk", Offset: 100, ChunkOffset: 5, ChunkDigest: sha}}, "no regular file before it"},
		{"no digest", []*estargz.TOCEntry{reg("a", 10, 100, "")}, "no digest"},
		{"bad digest", []*estargz.TOCEntry{reg("a", 10, 100, "sha256:zz")}, "chunk digest"},
		{"offset past TOC", []*estargz.TOCEntry{reg("a", 10, 5000, sha)}, "out of range"},
		{"no offset", []*estargz.TOCEntry{reg("a", 10, 0, sha)}, "out of range"},
		{"unknown type", []*estargz.TOCEntry{{Name: "x", Type: "socket"}}, "unknown type"},
		{"bad modtime", []*estargz.TOCEntry{{Name: "d", Type: "dir", ModTime3339: "yesterday"}}, "modtime"},
		{"negative size", []*estargz.TOCEntry{reg("a", -1, 100, sha)}, "size"},
		{"too many entries", []*estargz.TOCEntry{reg("a", 1, 100, sha), reg("b", 1, 200, sha), reg("c", 1, 300, sha)}, "more than 2 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sg := &stargzLayer{tocOff: 1000}
			err := sg.buildIndex(&estargz.JTOC{Entries: tc.entries}, &tar.Header{Name: estargz.TOCTarName, Typeflag: tar.TypeReg}, 2)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("buildIndex: got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	// A TOC member that is not the stargz.index.json tar entry.
	var tail bytes.Buffer
	zw := gzip.NewWriter(&tail)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "other.json", Typeflag: tar.TypeReg, Size: 2})
	tw.Write([]byte("{}"))
	tw.Close()
	zw.Close()
	for _, tc := range []struct {
		name string
		tail []byte
		want string
	}{
		{"wrong entry", tail.Bytes(), "want \"stargz.index.json\""},
		{"not gzip", []byte("plain bytes, no gzip"), "TOC gzip header"},
		{"truncated", tail.Bytes()[:15], "TOC tar header"},
	} {
		if _, _, _, err := parseStargzTOC(tc.tail); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseStargzTOC(%s): got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
