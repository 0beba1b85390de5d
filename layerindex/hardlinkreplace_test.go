package layerindex

import (
	"archive/tar"
	"context"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// A hardlink reads what its target held when the link was written, as GNU
// tar and docker extract it: a later entry replacing the target leaves the
// link (and links to it) with the original data. A link written after the
// replacement gets the replacement. Every way a blob is stored agrees, and
// so does an index read back from disk.
func TestHardlinkTargetReplacedLater(t *testing.T) {
	ctx := context.Background()
	link := func(name, target string) tarFile {
		return tarFile{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
	}
	files := []tarFile{
		reg("a", []byte("original content\n")),
		link("l1", "a"),
		link("l2", "a"),
		link("via-l1", "l1"),
		reg("a", []byte("the replacement, longer than the original\n")),
		link("after", "a"),
		link("l1-after", "l1"),
		reg("gone/f", []byte("under a dir that becomes a file\n")),
		link("keeps-gone", "gone/f"),
		reg("gone", []byte("a file now\n")),
	}
	tarData := makeTar(t, files)
	want := map[string]string{
		"a":          "the replacement, longer than the original\n",
		"l1":         "original content\n",
		"l2":         "original content\n",
		"via-l1":     "original content\n",
		"after":      "the replacement, longer than the original\n",
		"l1-after":   "original content\n",
		"keeps-gone": "under a dir that becomes a file\n",
		"gone":       "a file now\n",
	}
	type blobCase struct {
		name string
		blob []byte
	}
	var cases []blobCase
	for _, c := range blobCases(t, tarData) {
		cases = append(cases, blobCase{c.name, c.blob})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, pass := range []string{"built", "persisted"} {
				l := newTestManager(t, Options{Dir: dir}).Layer("k", UncachedBlob(newMemBlob(tc.blob)), LayerOptions{})
				x, err := l.Index(ctx)
				if err != nil {
					t.Fatalf("%s: Index: %v", pass, err)
				}
				for name, body := range want {
					e, ok := x.Lookup(name)
					if !ok {
						t.Errorf("%s: %s: missing", pass, name)
						continue
					}
					if got := string(readFile(ctx, t, l, e)); got != body {
						t.Errorf("%s: %s: got %q, want %q", pass, name, got, body)
					}
				}
				// l1 holds the original's data now; l2 and via-l1 share it.
				l1, _ := x.Lookup("l1")
				for _, name := range []string{"l2", "via-l1", "l1-after"} {
					e, _ := x.Lookup(name)
					if r, err := x.Resolve(e); err != nil || r != l1 {
						t.Errorf("%s: Resolve(%s): got %v, %v; want l1's entry", pass, name, r, err)
					}
				}
			}
		})
	}
}

// eStargz rewrites a tar (its converter orders entries its own way): the
// TOC must give each hardlink what the blob's own tar stream gives it.
func TestEStargzHardlinkTargetReplacedLater(t *testing.T) {
	ctx := context.Background()
	link := func(name, target string) tarFile {
		return tarFile{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
	}
	tarData := makeTar(t, []tarFile{
		reg("a", []byte("original content\n")),
		link("l1", "a"),
		reg("a", []byte("the replacement\n")),
		link("after", "a"),
	})
	blob, _ := buildStargz(t, tarData, 1<<10)
	sgl := newTestManager(t, Options{}).Layer("sg", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	sgIdx, err := sgl.Index(ctx)
	if err != nil {
		t.Fatalf("eStargz Index: %v", err)
	}
	gl := newTestManager(t, Options{}).Layer("gz", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	gl.sgState.sg.set(nil) // read the same blob as plain gzip
	gzIdx, err := gl.Index(ctx)
	if err != nil {
		t.Fatalf("gzip Index: %v", err)
	}
	for _, name := range []string{"a", "l1", "after"} {
		s, ok1 := sgIdx.Lookup(name)
		g, ok2 := gzIdx.Lookup(name)
		if !ok1 || !ok2 {
			t.Fatalf("%s: in the TOC %v, in the tar %v", name, ok1, ok2)
		}
		if got, want := string(readFile(ctx, t, sgl, s)), string(readFile(ctx, t, gl, g)); got != want {
			t.Errorf("%s: got %q through the TOC, want %q as the tar stream has it", name, got, want)
		}
	}
}

// A TOC in tar order (as a hand-made or other tool's eStargz may list it):
// the hardlink written before its target was replaced keeps the original
// entry's chunks.
func TestEStargzTOCHardlinkKeepsReplacedChunks(t *testing.T) {
	d1, d2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	sg := &stargzLayer{tocOff: 1000}
	toc := &estargz.JTOC{Entries: []*estargz.TOCEntry{
		{Name: "a", Type: "reg", Size: 10, Offset: 100, ChunkDigest: d1},
		{Name: "l1", Type: "hardlink", LinkName: "a"},
		{Name: "a", Type: "reg", Size: 5, Offset: 200, ChunkDigest: d2},
		{Name: "after", Type: "hardlink", LinkName: "a"},
	}}
	if err := sg.buildIndex(toc, &tar.Header{Name: estargz.TOCTarName, Typeflag: tar.TypeReg}, 100); err != nil {
		t.Fatal(err)
	}
	l1, _ := sg.index.Lookup("l1")
	if l1.Type != tar.TypeReg || l1.Size != 10 {
		t.Fatalf("l1: got type %q size %d, want the original regular file of 10 bytes", l1.Type, l1.Size)
	}
	if cs := sg.chunks["l1"]; len(cs) != 1 || cs[0].Offset != 100 || cs[0].Digest.String() != d1 {
		t.Errorf("l1's chunks: got %+v, want the original's at 100", cs)
	}
	if cs := sg.chunks["a"]; len(cs) != 1 || cs[0].Offset != 200 {
		t.Errorf("a's chunks: got %+v, want the replacement's at 200", cs)
	}
	after, _ := sg.index.Lookup("after")
	if r, err := sg.index.Resolve(after); err != nil || r.Name != "a" || r.Size != 5 {
		t.Errorf("after: resolves to %+v, %v; want the replacement", r, err)
	}
}
