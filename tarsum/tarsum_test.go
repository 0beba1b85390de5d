package tarsum

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

var (
	plainFile = testEntry{name: "etc/hostname", mode: 0o644, mtime: 1700000000, typeflag: tar.TypeReg, body: []byte("regfs\n")}
	emptyFile = testEntry{name: "empty", mode: 0o600, uid: 1000, gid: 1000, mtime: 1, typeflag: tar.TypeReg}
	dirEntry  = testEntry{name: "etc/", mode: 0o755, mtime: 1700000000, typeflag: tar.TypeDir}
	owned     = testEntry{name: "home/user/.profile", mode: 0o640, uid: 1000, gid: 100, uname: "user", gname: "users",
		mtime: 1600000000, typeflag: tar.TypeReg, body: []byte("export PATH\n")}
	symlink  = testEntry{name: "bin/sh", mode: 0o777, mtime: 5, typeflag: tar.TypeSymlink, linkname: "busybox"}
	hardlink = testEntry{name: "bin/ls", mode: 0o755, mtime: 5, typeflag: tar.TypeLink, linkname: "bin/busybox"}
	device   = testEntry{name: "dev/null", mode: 0o666, mtime: 5, typeflag: tar.TypeChar, devmajor: 1, devminor: 3}
	fifo     = testEntry{name: "run/fifo", mode: 0o600, mtime: 5, typeflag: tar.TypeFifo}
	xattrs   = testEntry{name: "usr/bin/ping", mode: 0o4755, mtime: 1700000000, typeflag: tar.TypeReg, body: []byte("ELF"),
		xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02 \x00", "user.b": "2", "user.a": "1"}}
	whiteout = testEntry{name: "var/.wh.cache", mode: 0o600, mtime: 7, typeflag: tar.TypeReg}
	longName = testEntry{name: strings.Repeat("very-long-directory-name/", 8) + "file-ü.txt", mode: 0o644, mtime: 9,
		typeflag: tar.TypeReg, body: []byte("long")}
	negativeMtime = testEntry{name: "old", mode: 0o644, mtime: -86400, typeflag: tar.TypeReg, body: []byte("1969")}
)

func bigFile(size int) testEntry {
	body := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	return testEntry{name: "big.bin", mode: 0o644, mtime: 42, typeflag: tar.TypeReg, body: body}
}

func manyFiles(n int) []testEntry {
	var es []testEntry
	for i := range n {
		es = append(es, testEntry{name: "d/f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "-" + hex.EncodeToString([]byte{byte(i), byte(i >> 8)}),
			mode: 0o644, mtime: int64(i), typeflag: tar.TypeReg, body: bytes.Repeat([]byte{byte(i)}, i%1500)})
	}
	return es
}

// TestSumMatchesSpecification checks every version, plain and gzip input,
// against the hand-written reference implementation.
func TestSumMatchesSpecification(t *testing.T) {
	tests := []struct {
		name    string
		entries []testEntry
		extra   []byte
	}{
		{"empty tar", nil, nil},
		{"empty tar with extra", nil, []byte(`{"id":"abc"}`)},
		{"one file", []testEntry{plainFile}, nil},
		{"one file with extra", []testEntry{plainFile}, []byte(`{"id":"abc"}`)},
		{"empty file", []testEntry{emptyFile}, nil},
		{"every entry type", []testEntry{dirEntry, plainFile, owned, symlink, hardlink, device, fifo, whiteout}, nil},
		{"xattrs", []testEntry{xattrs, plainFile}, nil},
		{"long non-ASCII name", []testEntry{longName}, nil},
		{"mtime before 1970", []testEntry{negativeMtime}, nil},
		{"body larger than a read chunk", []testEntry{bigFile(3*bodyChunk + 123), plainFile}, nil},
		{"many files", manyFiles(300), []byte("extra")},
	}
	for _, tc := range tests {
		tar := buildTar(t, tc.entries...)
		for _, v := range Versions() {
			want := specSum(v, tc.entries, tc.extra)
			if got := sumOf(t, tar, Options{Version: v}, tc.extra); got != want {
				t.Errorf("%s, %v, plain: got %s, want %s", tc.name, v, got, want)
			}
			if got := sumOf(t, gzipBytes(t, tar), Options{Version: v}, tc.extra); got != want {
				t.Errorf("%s, %v, gzip: got %s, want %s", tc.name, v, got, want)
			}
		}
	}
}

func TestEmptyInputs(t *testing.T) {
	emptyHash := hex.EncodeToString(sha256.New().Sum(nil))
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"zero bytes", nil},
		{"end-of-archive blocks only", make([]byte, 1024)},
		{"one zero block", make([]byte, 512)},
		{"full 10 KiB record of zeros", make([]byte, 10240)},
		{"gzip of end-of-archive blocks", gzipBytes(t, make([]byte, 1024))},
	} {
		for _, v := range Versions() {
			want := v.String() + "+sha256:" + emptyHash
			if got := sumOf(t, tc.input, Options{Version: v}, nil); got != want {
				t.Errorf("%s, %v: got %s, want %s", tc.name, v, got, want)
			}
		}
	}
}

func TestVersionsDifferWhereTheSpecSaysSo(t *testing.T) {
	withX := buildTar(t, xattrs)
	noX := xattrs
	noX.xattrs = nil
	withoutX := buildTar(t, noX)
	later := xattrs
	later.mtime += 3600
	laterTar := buildTar(t, later)

	tests := []struct {
		name   string
		a, b   []byte
		v      Version
		differ bool
	}{
		{"v0 ignores xattrs", withX, withoutX, Version0, false},
		{"v1 hashes xattrs", withX, withoutX, Version1, true},
		{"dev hashes xattrs", withX, withoutX, VersionDev, true},
		{"v0 hashes mtime", withX, laterTar, Version0, true},
		{"v1 ignores mtime", withX, laterTar, Version1, false},
		{"dev ignores mtime", withX, laterTar, VersionDev, false},
	}
	for _, tc := range tests {
		a, b := sumOf(t, tc.a, Options{Version: tc.v}, nil), sumOf(t, tc.b, Options{Version: tc.v}, nil)
		if (a != b) != tc.differ {
			t.Errorf("%s: got sums %s and %s, want differ=%v", tc.name, a, b, tc.differ)
		}
	}
	v1, dev := sumOf(t, withX, Options{Version: Version1}, nil), sumOf(t, withX, Options{Version: VersionDev}, nil)
	if strings.TrimPrefix(v1, "tarsum.v1") != strings.TrimPrefix(dev, "tarsum.dev") {
		t.Errorf("v1 %s and dev %s: got different digests, want the same digest under two labels", v1, dev)
	}
}

func TestFileOrderDoesNotMatter(t *testing.T) {
	entries := manyFiles(64)
	want := sumOf(t, buildTar(t, entries...), Options{}, nil)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 5 {
		shuffled := slices.Clone(entries)
		r.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if got := sumOf(t, buildTar(t, shuffled...), Options{}, nil); got != want {
			t.Errorf("shuffle %d: got %s, want %s", i, got, want)
		}
	}
}

func TestSamePathEntriesKeepTheirOrder(t *testing.T) {
	first := testEntry{name: "a", mode: 0o644, typeflag: tar.TypeReg, body: []byte("first")}
	second := testEntry{name: "./a", mode: 0o644, typeflag: tar.TypeReg, body: []byte("second")}
	sum := func(e testEntry) string { return hexHash(sha256.New, []byte(specHeader(Version0, e, false)), e.body) }
	final := func(sums ...string) string {
		return "tarsum+sha256:" + hexHash(sha256.New, []byte(strings.Join(sums, "")))
	}
	forward := sumOf(t, buildTar(t, first, second), Options{}, nil)
	if want := final(sum(first), sum(second)); forward != want {
		t.Errorf("a then ./a: got %s, want %s (occurrence order, not sum order)", forward, want)
	}
	reverse := sumOf(t, buildTar(t, second, first), Options{}, nil)
	if want := final(sum(second), sum(first)); reverse != want {
		t.Errorf("./a then a: got %s, want %s", reverse, want)
	}
	if forward == reverse {
		t.Errorf("same-path entries in either order: got equal sums %s, want different", forward)
	}
}

func TestOrderForFinalSum(t *testing.T) {
	fs := func(name, sum string, pos int) FileSum { return FileSum{Name: name, Sum: sum, Position: pos} }
	tests := []struct {
		name  string
		files []FileSum
		want  []string // sums in final order
	}{
		{"distinct paths sort by sum", []FileSum{fs("x", "c", 0), fs("y", "a", 1), fs("z", "b", 2)}, []string{"a", "b", "c"}},
		{"same path in occurrence order", []FileSum{fs("a", "c", 0), fs("a", "b", 1)}, []string{"c", "b"}},
		{"same path around another path", []FileSum{fs("a", "c", 0), fs("b", "b", 1), fs("a", "a", 2)}, []string{"c", "b", "a"}},
		{"two duplicated paths", []FileSum{fs("p", "d", 0), fs("q", "a", 1), fs("p", "b", 2), fs("q", "c", 3)},
			[]string{"a", "d", "c", "b"}},
		{"equal sums keep position", []FileSum{fs("m", "e", 1), fs("n", "e", 0)}, []string{"e", "e"}},
	}
	for _, tc := range tests {
		var got []string
		for _, f := range orderForFinalSum(tc.files) {
			got = append(got, f.Sum)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCompatibilityOptions(t *testing.T) {
	legacy := testEntry{name: "legacy", mode: 0o644, uid: 1, gid: 2, uname: "daemon", gname: "bin", mtime: 3,
		typeflag: tar.TypeReg, body: []byte("old tar")}
	legacyDir := testEntry{name: "olddir/", mode: 0o755, mtime: 3, typeflag: tar.TypeDir}
	raw := buildTar(t, legacy, legacyDir)
	setTypeflag(raw, 0, tar.TypeRegA)       // first header
	setTypeflag(raw, 512+512, tar.TypeRegA) // second header, after the 7-byte body's block

	stored, storedDir := legacy, legacyDir
	stored.typeflag, storedDir.typeflag = 0, 0
	tests := []struct {
		name    string
		opts    Options
		entries []testEntry
		ignore  bool
	}{
		{"spec: stored typeflag, owner names", Options{}, []testEntry{stored, storedDir}, false},
		{"owner names ignored", Options{IgnoreOwnerNames: true}, []testEntry{stored, storedDir}, true},
		{"legacy typeflag promoted", Options{PromoteLegacyTypeflag: true}, []testEntry{legacy, legacyDir}, false},
		{"current moby", Options{IgnoreOwnerNames: true, PromoteLegacyTypeflag: true}, []testEntry{legacy, legacyDir}, true},
	}
	for _, tc := range tests {
		var sums []string
		for _, e := range tc.entries {
			sums = append(sums, hexHash(sha256.New, []byte(specHeader(Version0, e, tc.ignore)), e.body))
		}
		slices.Sort(sums)
		want := "tarsum+sha256:" + hexHash(sha256.New, []byte(strings.Join(sums, "")))
		if got := sumOf(t, raw, tc.opts, nil); got != want {
			t.Errorf("%s: got %s, want %s", tc.name, got, want)
		}
	}
}

// TestPassThrough checks the bytes come out unchanged whatever the read
// sizes and however the source splits its reads.
func TestPassThrough(t *testing.T) {
	tarBytes := buildTar(t, bigFile(100_000), plainFile, xattrs, longName)
	padded := append(slices.Clone(tarBytes), make([]byte, 10240-len(tarBytes)%10240)...)
	half := len(tarBytes) / 2
	twoMembers := append(gzipBytes(t, tarBytes[:half]), gzipBytes(t, tarBytes[half:])...)
	gzPadded := append(gzipBytes(t, tarBytes), 0, 0, 0, 0)
	want := specSum(Version1, []testEntry{bigFile(100_000), plainFile, xattrs, longName}, nil)

	inputs := []struct {
		name       string
		input      []byte
		compressed bool
	}{
		{"plain", tarBytes, false},
		{"padded to the tar record size", padded, false},
		{"gzip", gzipBytes(t, tarBytes), true},
		{"gzip in two members", twoMembers, true},
		{"gzip followed by zero padding", gzPadded, true},
	}
	sources := []struct {
		name string
		wrap func([]byte) *TarSum
	}{
		{"whole reader", func(b []byte) *TarSum { return mustNew(t, bytes.NewReader(b)) }},
		{"one byte at a time", func(b []byte) *TarSum { return mustNew(t, iotest.OneByteReader(bytes.NewReader(b))) }},
		{"half reads", func(b []byte) *TarSum { return mustNew(t, iotest.HalfReader(bytes.NewReader(b))) }},
		{"data with EOF", func(b []byte) *TarSum { return mustNew(t, iotest.DataErrReader(bytes.NewReader(b))) }},
	}
	for _, in := range inputs {
		for _, src := range sources {
			for _, readSize := range []int{1, 511, 4096, 1 << 20} {
				ts := src.wrap(in.input)
				out, err := readAllBy(ts, readSize)
				if err != nil {
					t.Fatalf("%s, %s, reads of %d: %v", in.name, src.name, readSize, err)
				}
				if !bytes.Equal(out, in.input) {
					t.Errorf("%s, %s, reads of %d: got %d bytes out, want the %d input bytes", in.name, src.name, readSize, len(out), len(in.input))
				}
				if got := ts.Sum(nil); got != want {
					t.Errorf("%s, %s, reads of %d: got %s, want %s", in.name, src.name, readSize, got, want)
				}
				if ts.Compressed() != in.compressed {
					t.Errorf("%s: Compressed() = %v, want %v", in.name, ts.Compressed(), in.compressed)
				}
			}
		}
	}
}

func mustNew(t testing.TB, r interface{ Read([]byte) (int, error) }) *TarSum {
	t.Helper()
	ts, err := New(r, Options{Version: Version1})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestFilesReportsEachEntry(t *testing.T) {
	entries := []testEntry{plainFile, dirEntry, longName}
	ts := mustNew(t, bytes.NewReader(buildTar(t, entries...)))
	if _, err := readAllBy(ts, 1000); err != nil {
		t.Fatal(err)
	}
	files := ts.Files()
	if len(files) != len(entries) {
		t.Fatalf("Files(): got %d entries, want %d", len(files), len(entries))
	}
	for i, e := range entries {
		wantSum := hexHash(sha256.New, []byte(specHeader(Version1, e, false)), e.body)
		wantName := strings.TrimSuffix(e.name, "/")
		if files[i].Name != wantName || files[i].Sum != wantSum || files[i].Position != i {
			t.Errorf("Files()[%d]: got %+v, want {%s %s %d}", i, files[i], wantName, wantSum, i)
		}
	}
}

func TestEntryPath(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "./a": "a", "/a": "a", "a/": "a", "./a/b/../c/": "a/c", "/": ".", ".": ".", "../x": "x", "": ".",
	} {
		if got := entryPath(in); got != want {
			t.Errorf("entryPath(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestInsecurePathsAreHashed(t *testing.T) {
	t.Setenv("GODEBUG", "tarinsecurepath=0")
	abs := testEntry{name: "/etc/passwd", mode: 0o644, typeflag: tar.TypeReg, body: []byte("root")}
	up := testEntry{name: "../escape", mode: 0o644, typeflag: tar.TypeReg, body: []byte("x")}
	entries := []testEntry{abs, up}
	if _, err := tar.NewReader(bytes.NewReader(buildTar(t, abs))).Next(); !errors.Is(err, tar.ErrInsecurePath) {
		t.Fatalf("archive/tar with tarinsecurepath=0: got %v, want ErrInsecurePath (else this test checks nothing)", err)
	}
	if got, want := sumOf(t, buildTar(t, entries...), Options{}, nil), specSum(Version0, entries, nil); got != want {
		t.Errorf("absolute and .. names: got %s, want %s", got, want)
	}
}

// TestSparseFileHashesLogicalContents hand-builds a GNU sparse 1.0 entry
// (PAX records, then a map at the start of the data): the hash covers the
// expanded file under its real name and size.
func TestSparseFileHashesLogicalContents(t *testing.T) {
	record := func(k, v string) string {
		line := " " + k + "=" + v + "\n"
		n := len(line)
		for len(strconv.Itoa(n))+len(line) != n {
			n = len(strconv.Itoa(n)) + len(line)
		}
		return strconv.Itoa(n) + line
	}
	pax := record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0") +
		record("GNU.sparse.name", "sparse.img") + record("GNU.sparse.realsize", "10")
	data := append(padBlock([]byte("1\n5\n5\n")), "hello"...)
	var archive []byte
	archive = append(archive, rawHeader("./PaxHeaders/sparse.img", int64(len(pax)), tar.TypeXHeader)...)
	archive = append(archive, padBlock([]byte(pax))...)
	archive = append(archive, rawHeader("./GNUSparseFile.0/sparse.img", int64(len(data)), tar.TypeReg)...)
	archive = append(archive, padBlock(data)...)
	archive = append(archive, make([]byte, 1024)...)

	want := testEntry{name: "sparse.img", mode: 0o644, typeflag: tar.TypeReg, body: []byte("\x00\x00\x00\x00\x00hello")}
	for _, v := range Versions() {
		if got, wantSum := sumOf(t, archive, Options{Version: v}, nil), specSum(v, []testEntry{want}, nil); got != wantSum {
			t.Errorf("%v: got %s, want %s", v, got, wantSum)
		}
	}
}
