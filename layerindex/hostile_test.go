package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand"
	"strings"
	"testing"
)

func indexOf(t *testing.T, blob []byte) (*Layer, *Index, error) {
	t.Helper()
	m := newTestManager(t, Options{})
	l := m.Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
	x, err := l.Index(context.Background())
	return l, x, err
}

func TestHostileNames(t *testing.T) {
	ctx := context.Background()
	files := []tarFile{
		reg("../../etc/passwd", []byte("climb")),
		reg("/abs/file", []byte("abs")),
		reg("./dot/./x//y", []byte("dots")),
		reg("new\nline", []byte("nl")),
		reg("bad\xff\xfeutf8", []byte("utf")),
		reg("a/b/c/deep", []byte("implicit parents")),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "escape", Linkname: "../../../../etc/shadow"}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hl-missing", Linkname: "no/such/file"}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hl-climb", Linkname: "../../etc/passwd"}},
	}
	_, x, err := indexOf(t, gzipOf(t, makeTar(t, files), 6))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body string }{
		{"etc/passwd", "climb"}, {"abs/file", "abs"}, {"dot/x/y", "dots"}, {"new\nline", "nl"}, {"bad\xff\xfeutf8", "utf"}, {"a/b/c/deep", "implicit parents"},
	} {
		if _, ok := x.Lookup(tc.name); !ok {
			t.Errorf("Lookup(%q): missing", tc.name)
		}
	}
	for _, d := range []string{"a", "a/b", "a/b/c", "etc", "abs", "dot", "dot/x"} {
		e, ok := x.Lookup(d)
		if !ok || e.Type != tar.TypeDir || !e.Implicit || e.Mode != fs.ModeDir|0o755 {
			t.Errorf("implicit dir %q: got %+v, want an implicit 0755 dir", d, e)
		}
	}
	if e, _ := x.Lookup("escape"); e.Linkname != "../../../../etc/shadow" {
		t.Errorf("symlink target: got %q, want it unchanged", e.Linkname)
	}
	if e, _ := x.Lookup("hl-climb"); e.Linkname != "etc/passwd" {
		t.Errorf("hardlink target: got %q, want etc/passwd", e.Linkname)
	}
	for _, e := range x.Entries() {
		if e.Name == "" || strings.HasPrefix(e.Name, "/") || strings.Contains("/"+e.Name+"/", "/../") {
			t.Errorf("entry name %q escapes", e.Name)
		}
	}
	m := newTestManager(t, Options{})
	l := m.Layer("k", UncachedBlob(newMemBlob(gzipOf(t, makeTar(t, files), 6))), LayerOptions{})
	x, _ = l.Index(ctx)
	hm, _ := x.Lookup("hl-missing")
	if _, err := l.OpenFile(ctx, hm); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile of a hardlink to a missing file: got %v, want ErrNotExist", err)
	}
	hc, _ := x.Lookup("hl-climb")
	if got := readFile(ctx, t, l, hc); string(got) != "climb" {
		t.Errorf("hardlink content: got %q", got)
	}
}

func TestReplacementRules(t *testing.T) {
	ctx := context.Background()
	files := []tarFile{
		reg("dup", []byte("first")),
		dir("d/"),
		reg("d/child", []byte("gone")),
		reg("dup", []byte("second wins")),
		reg("d", []byte("file replaces dir")), // removes d/child
		dir("e/"),
		reg("e/kept", []byte("kept")),
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "e/", Mode: 0o700}}, // dir over dir keeps children
		reg("f", []byte("file")),
		reg("f/under", []byte("dir replaces file")),
		dir("./"),
	}
	m := newTestManager(t, Options{})
	l := m.Layer("k", UncachedBlob(newMemBlob(makeTar(t, files))), LayerOptions{})
	x, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := x.Lookup("dup"); string(readFile(ctx, t, l, e)) != "second wins" {
		t.Errorf("duplicate: last entry should win")
	}
	if _, ok := x.Lookup("d/child"); ok {
		t.Errorf("d/child: still there after d became a file")
	}
	if e, _ := x.Lookup("d"); e.Type != tar.TypeReg {
		t.Errorf("d: got type %c, want a file", e.Type)
	}
	if e, _ := x.Lookup("e"); e.Mode.Perm() != 0o700 {
		t.Errorf("e: got mode %v, want the later 0700", e.Mode)
	}
	if _, ok := x.Lookup("e/kept"); !ok {
		t.Errorf("e/kept: lost when e was listed again")
	}
	if e, _ := x.Lookup("f"); e.Type != tar.TypeDir || !e.Implicit {
		t.Errorf("f: got %+v, want an implicit dir", e)
	}
	if x.Root().Implicit {
		t.Errorf("root: the tar's ./ entry was not used")
	}
	var names []string
	for _, e := range x.Children("") {
		names = append(names, e.Name)
	}
	if got, want := strings.Join(names, ","), "d,dup,e,f"; got != want {
		t.Errorf("Children(root): got %s, want %s", got, want)
	}
}

func TestHugePAXHeader(t *testing.T) {
	ctx := context.Background()
	// archive/tar won't write it: write a 2 MiB record as a regular file,
	// then turn its header into a PAX header ('x') with a fixed checksum.
	rec := "SCHILY.xattr.user.big=" + strings.Repeat("A", 2<<20) + "\n"
	n := len(rec) + 8
	rec = fmtInt(n) + " " + rec
	body := []byte(rec)
	tarData := makeTar(t, []tarFile{reg("ok", []byte("fine")), reg("PaxHeaders/x", body), reg("x", []byte("x"))})
	hdr := tarData[1024 : 1024+512] // "ok" takes a header and one data block
	hdr[156] = 'x'
	copy(hdr[148:156], "        ")
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], []byte(fmtOctal(sum)))
	m := newTestManager(t, Options{})
	l := m.Layer("k", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	if _, err := l.Index(ctx); !errors.Is(err, tar.ErrFieldTooLong) {
		t.Errorf("Index of a tar with a 2 MiB PAX header: got %v, want tar.ErrFieldTooLong", err)
	}
	// The tar stream itself is still served, byte for byte.
	if size, err := l.TarSize(ctx); err != nil || size != int64(len(tarData)) {
		t.Errorf("TarSize: got %d, %v; want %d", size, err, len(tarData))
	}
}

func TestNotATar(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	junk := make([]byte, 100000)
	rng.Read(junk)
	l, _, err := indexOf(t, gzipOf(t, junk, 6))
	if err == nil {
		t.Fatal("Index of gzipped noise: got no error")
	}
	if size, err := l.TarSize(context.Background()); err != nil || size != int64(len(junk)) {
		t.Errorf("TarSize of gzipped noise: got %d, %v; want %d", size, err, len(junk))
	}
}

func TestCorruptGzipLayer(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 30, 20, 100<<10)
	good := gzipOf(t, tarData, 6)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x10
	cases := map[string][]byte{
		"truncated": good[:len(good)*2/3],
		"corrupt":   flipped,
		"crc":       append(append([]byte(nil), good[:len(good)-8]...), 0, 0, 0, 0, 0, 0, 0, 0),
	}
	for name, blob := range cases {
		m := newTestManager(t, Options{})
		l := m.Layer(name, UncachedBlob(newMemBlob(blob)), LayerOptions{})
		_, err := l.Index(ctx)
		if err == nil || !(errors.Is(err, errCorrupt) || errors.Is(err, errTruncated)) {
			t.Errorf("%s: Index: got %v, want a corrupt/truncated gzip error", name, err)
		}
		if _, err := l.TarSize(ctx); err == nil {
			t.Errorf("%s: TarSize: got no error", name)
		}
		if p := l.Progress(); p.State != IndexFailed {
			t.Errorf("%s: Progress: got %q, want failed", name, p.State)
		}
		// Sequential reading never returns bytes past the damage as valid:
		// it ends in an error.
		r := l.NewTarReader()
		var out []byte
		buf := make([]byte, 64<<10)
		var rerr error
		for off := int64(0); ; {
			n, err := r.ReadAt(ctx, buf, off)
			out = append(out, buf[:n]...)
			off += int64(n)
			if err != nil {
				rerr = err
				break
			}
		}
		r.Close()
		if rerr == nil || errors.Is(rerr, nil) && bytes.Equal(out, tarData) {
			t.Errorf("%s: sequential read: got %v after %d bytes, want an error", name, rerr, len(out))
		}
	}
}

func fmtOctal(v int) string {
	s := ""
	for i := 0; i < 6; i++ {
		s = string(rune('0'+v%8)) + s
		v /= 8
	}
	return s + "\x00 "
}
