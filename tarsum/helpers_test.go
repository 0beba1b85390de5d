package tarsum

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"
	"testing"
	"time"
)

// testEntry describes one archive entry by the values the specification
// hashes, so the expected sum can be written out by hand.
type testEntry struct {
	name               string
	mode               int64
	uid, gid           int
	uname, gname       string
	mtime              int64
	typeflag           byte
	linkname           string
	devmajor, devminor int64
	xattrs             map[string]string
	body               []byte
}

func (e testEntry) header() *tar.Header {
	h := &tar.Header{
		Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, Uname: e.uname, Gname: e.gname,
		ModTime: time.Unix(e.mtime, 0), Typeflag: e.typeflag, Linkname: e.linkname,
		Devmajor: e.devmajor, Devminor: e.devminor, Size: int64(len(e.body)),
	}
	if len(e.xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range e.xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return h
}

// buildTar writes entries with archive/tar (which picks USTAR, PAX or GNU
// as each header needs) and returns the archive.
func buildTar(t testing.TB, entries ...testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("write body %q: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("close tar: %v", err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// specHeader is the "<key><value>" string of the specification's Headers
// section, written out field by field.
func specHeader(v Version, e testEntry, ignoreOwnerNames bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name%smode%duid%dgid%dsize%d", e.name, e.mode, e.uid, e.gid, len(e.body))
	if v == Version0 {
		fmt.Fprintf(&b, "mtime%d", e.mtime)
	}
	uname, gname := e.uname, e.gname
	if ignoreOwnerNames {
		uname, gname = "", ""
	}
	b.WriteString("typeflag")
	b.WriteByte(e.typeflag)
	fmt.Fprintf(&b, "linkname%suname%sgname%sdevmajor%ddevminor%d", e.linkname, uname, gname, e.devmajor, e.devminor)
	if v != Version0 {
		var keys []string
		for k := range e.xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(k + e.xattrs[k])
		}
	}
	return b.String()
}

func hexHash(newHash func() hash.Hash, parts ...[]byte) string {
	h := newHash()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// specSum is the specification's final checksum for entries with distinct
// paths: each entry's sum, sorted as strings, after extra.
func specSum(v Version, entries []testEntry, extra []byte) string {
	var sums []string
	for _, e := range entries {
		sums = append(sums, hexHash(sha256.New, []byte(specHeader(v, e, false)), e.body))
	}
	sort.Strings(sums)
	parts := [][]byte{extra}
	for _, s := range sums {
		parts = append(parts, []byte(s))
	}
	return v.String() + "+sha256:" + hexHash(sha256.New, parts...)
}

// readAllBy reads ts to the end with reads of size n and returns the bytes.
func readAllBy(ts io.Reader, n int) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, n)
	for {
		k, err := ts.Read(buf)
		out.Write(buf[:k])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// sumOf streams input through a TarSum and checks it passes the bytes through.
func sumOf(t testing.TB, input []byte, opts Options, extra []byte) string {
	t.Helper()
	ts, err := New(bytes.NewReader(input), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	out, err := readAllBy(ts, 4096)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(out, input) {
		t.Fatalf("passed through %d bytes, want the %d input bytes unchanged", len(out), len(input))
	}
	if !ts.Done() {
		t.Fatalf("Done() = false after io.EOF")
	}
	return ts.Sum(extra)
}

// setTypeflag rewrites the typeflag of the header block at off and fixes
// its checksum, to make archives Go's writer no longer produces.
func setTypeflag(b []byte, off int, flag byte) {
	blk := b[off : off+512]
	blk[156] = flag
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func sha256New() hash.Hash { return sha256.New() }

// rawHeader builds a USTAR header block by hand, for entries Go's writer
// refuses to produce.
func rawHeader(name string, size int64, typeflag byte) []byte {
	blk := make([]byte, 512)
	copy(blk[0:100], name)
	copy(blk[100:108], "0000644\x00")
	copy(blk[108:116], "0000000\x00")
	copy(blk[116:124], "0000000\x00")
	copy(blk[124:136], fmt.Sprintf("%011o\x00", size))
	copy(blk[136:148], "00000000000\x00")
	blk[156] = typeflag
	copy(blk[257:265], "ustar\x0000")
	setTypeflag(blk, 0, typeflag) // fills in the checksum
	return blk
}

func padBlock(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}
