package tarsum

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func readErr(t *testing.T, input []byte) (*TarSum, error) {
	t.Helper()
	ts, err := New(bytes.NewReader(input), Options{Version: Version1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := readAllBy(ts, 1000)
	if !bytes.HasPrefix(input, out) {
		t.Errorf("before the error: got %d bytes that are not a prefix of the input", len(out))
	}
	return ts, err
}

func TestCorruptInput(t *testing.T) {
	good := buildTar(t, plainFile, bigFile(5000), longName)
	gz := gzipBytes(t, good)

	badChecksum := slices.Clone(good)
	badChecksum[0] ^= 0xff // name byte: the header checksum no longer matches
	badSize := slices.Clone(good)
	copy(badSize[124:136], "-0000000001\x00") // a negative size field
	badPAX := buildTar(t, xattrs)
	copy(badPAX[512:], "99999 x=\n") // PAX record longer than its data
	gzBadCRC := slices.Clone(gz)
	gzBadCRC[len(gzBadCRC)-8] ^= 0xff // gzip trailer CRC
	gzBadData := slices.Clone(gz)
	gzBadData[20] ^= 0xff
	notTar := []byte(strings.Repeat("this is not a tar archive. ", 40))

	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"truncated inside the first header", good[:300], io.ErrUnexpectedEOF},
		{"truncated inside a body", good[:512+3], io.ErrUnexpectedEOF},
		{"truncated inside the end-of-archive blocks", good[:len(good)-700], io.ErrUnexpectedEOF},
		{"header checksum wrong", badChecksum, tar.ErrHeader},
		{"negative size", badSize, tar.ErrHeader},
		{"malformed PAX record", badPAX, tar.ErrHeader},
		{"not a tar", notTar, tar.ErrHeader},
		{"gzip truncated", gz[:len(gz)/2], io.ErrUnexpectedEOF},
		{"gzip truncated in the trailer", gz[:len(gz)-3], io.ErrUnexpectedEOF},
		{"gzip CRC wrong", gzBadCRC, nil},
		{"gzip data corrupt", gzBadData, nil},
		{"gzip magic only", []byte{0x1f, 0x8b}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		ts, err := readErr(t, tc.input)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got error %v, want ErrCorrupt", tc.name, err)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: got error %v, want it to wrap %v", tc.name, err, tc.want)
		}
		if _, again := ts.Read(make([]byte, 10)); again != err {
			t.Errorf("%s: Read after the error: got %v, want the same error %v", tc.name, again, err)
		}
	}
}

func TestUnsupportedCompression(t *testing.T) {
	for name, magic := range map[string][]byte{
		"zstd":  {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0},
		"bzip2": []byte("BZh91AY&SY"),
		"xz":    {0xfd, '7', 'z', 'X', 'Z', 0x00, 0, 0},
	} {
		_, err := readErr(t, magic)
		if !errors.Is(err, ErrUnsupportedCompression) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s input: got %v, want ErrUnsupportedCompression naming %s", name, err, name)
		}
	}
}

func TestTarNamedLikeCompressionMagic(t *testing.T) {
	for _, name := range []string{"BZh91AY&SY", "\x1f\x8b\x08gz", "\x28\xb5\x2f\xfdzstd", "\xfd7zXZ"} {
		e := testEntry{name: name, mode: 0o644, typeflag: tar.TypeReg, body: []byte("not compressed")}
		// Raw USTAR: Go's writer would put a PAX header first for these bytes.
		archive := append(rawHeader(name, int64(len(e.body)), tar.TypeReg), padBlock(slices.Clone(e.body))...)
		archive = append(archive, make([]byte, 1024)...)
		if got, want := sumOf(t, archive, Options{}, nil), specSum(Version0, []testEntry{e}, nil); got != want {
			t.Errorf("tar whose first name is %q: got %s, want %s", name, got, want)
		}
	}
}

// TestTruncationNeverPasses cuts a tar and its gzip at every byte: each cut
// must fail or give a different sum, unless only end-of-archive padding went.
func TestTruncationNeverPasses(t *testing.T) {
	entries := []testEntry{plainFile, dirEntry, xattrs, longName, emptyFile}
	good := buildTar(t, entries...)
	want := specSum(Version1, entries, nil)
	dataEnd := len(good) - 1024 // archive/tar ends with two zero blocks
	for cut := 1; cut < len(good); cut++ {
		ts, err := readErr(t, good[:cut])
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("tar cut at %d: got %v, want ErrCorrupt", cut, err)
			}
			continue
		}
		if got := ts.Sum(nil); got == want && cut < dataEnd {
			t.Fatalf("tar cut at %d of %d: got the full archive's sum %s", cut, len(good), got)
		}
	}
	gz := gzipBytes(t, good)
	for cut := 1; cut < len(gz); cut++ {
		if _, err := readErr(t, gz[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("gzip cut at %d of %d: got %v, want ErrCorrupt", cut, len(gz), err)
		}
	}
}

func TestSourceErrorIsNotCorruption(t *testing.T) {
	boom := errors.New("connection reset")
	good := buildTar(t, bigFile(20000))
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"plain", good},
		{"gzip", gzipBytes(t, good)},
	} {
		for _, at := range []int{0, 100, 5000, len(tc.input) - 1} {
			src := io.MultiReader(bytes.NewReader(tc.input[:at]), iotest.ErrReader(boom))
			ts, err := New(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			out, err := readAllBy(ts, 4096)
			if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
				t.Errorf("%s, source fails after %d bytes: got %v, want the source's error and not ErrCorrupt", tc.name, at, err)
			}
			if !bytes.Equal(out, tc.input[:at]) {
				t.Errorf("%s, source fails after %d bytes: got %d bytes through, want %d", tc.name, at, len(out), at)
			}
		}
	}
}

// badCountReader claims to have read more than it was given.
type badCountReader struct{}

func (badCountReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestMisbehavingSourceDoesNotPanic(t *testing.T) {
	ts, err := New(badCountReader{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAllBy(ts, 100); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("reader returning n > len(p): got %v, want a source error", err)
	}
}

func FuzzTarSum(f *testing.F) {
	f.Add(buildTar(f, plainFile, xattrs))
	f.Add(gzipBytes(f, buildTar(f, longName, dirEntry)))
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, input []byte) {
		ts, err := New(bytes.NewReader(input), Options{Version: Version1})
		if err != nil {
			t.Fatal(err)
		}
		out, err := readAllBy(ts, 333)
		if err == nil && !bytes.Equal(out, input) {
			t.Fatalf("no error but %d bytes out for %d in", len(out), len(input))
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedCompression) {
			t.Fatalf("error %v is neither ErrCorrupt nor ErrUnsupportedCompression", err)
		}
		_ = ts.Sum(nil)
	})
}

// TestRandomMutations feeds mutated archives through: every one must end in
// io.EOF with the bytes passed through, or in a classified error.
func TestRandomMutations(t *testing.T) {
	seeds := [][]byte{buildTar(t, plainFile, xattrs, longName), gzipBytes(t, buildTar(t, longName, dirEntry)), make([]byte, 1024)}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		in := slices.Clone(seeds[i%len(seeds)])
		for k := r.IntN(6); k >= 0 && len(in) > 0; k-- {
			switch p := r.IntN(len(in)); r.IntN(3) {
			case 0:
				in[p] = byte(r.Uint32())
			case 1:
				in = in[:p]
			default:
				in = slices.Insert(in, p, byte(r.Uint32()))
			}
		}
		ts, err := New(bytes.NewReader(in), Options{Version: Version1})
		if err != nil {
			t.Fatal(err)
		}
		out, err := readAllBy(ts, 333)
		switch {
		case err == nil && !bytes.Equal(out, in):
			t.Fatalf("mutation %d: no error but %d bytes out for %d in", i, len(out), len(in))
		case err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedCompression):
			t.Fatalf("mutation %d: error %v is neither ErrCorrupt nor ErrUnsupportedCompression", i, err)
		}
	}
}
