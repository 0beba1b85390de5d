package tarsum

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{"tarsum", Version0, false},
		{"tarsum.v1", Version1, false},
		{"tarsum.dev", VersionDev, false},
		{"tarsum.v1+sha256", Version1, false},
		{"tarsum+sha256:0123", Version0, false},
		{"tarsum.v2", 0, true},
		{"TARSUM", 0, true},
		{"", 0, true},
		{"+sha256:00", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseVersion(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrUnknownVersion) {
				t.Errorf("ParseVersion(%q): got %v, %v; want ErrUnknownVersion", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseVersion(%q): got %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if !strings.HasPrefix(tc.in, got.String()) {
			t.Errorf("%v.String() = %q: want a prefix of %q", got, got.String(), tc.in)
		}
	}
	if s := Version(9).String(); s != "tarsum.Version(9)" {
		t.Errorf("Version(9).String(): got %q, want tarsum.Version(9)", s)
	}
}

func TestParseChecksum(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	tests := []struct {
		in   string
		want error
	}{
		{"tarsum+sha256:" + hex64, nil},
		{"tarsum.v1+sha512:" + hex64 + hex64, nil},
		{"tarsum.dev+sha256:" + hex64, nil},
		{"tarsum+sha256" + hex64, ErrMalformedChecksum},
		{"tarsum:" + hex64, ErrMalformedChecksum},
		{"tarsum.v9+sha256:" + hex64, ErrUnknownVersion},
		{"tarsum+md5:" + hex64[:32], ErrUnknownHash},
		{"tarsum+sha256:" + hex64[:62], ErrMalformedChecksum},
		{"tarsum+sha512:" + hex64, ErrMalformedChecksum},
		{"tarsum+sha256:" + strings.ToUpper(hex64), ErrMalformedChecksum},
		{"tarsum+sha256:" + hex64[:63] + "g", ErrMalformedChecksum},
		{"sha256:" + hex64, ErrMalformedChecksum},
		{"", ErrMalformedChecksum},
	}
	for _, tc := range tests {
		c, err := ParseChecksum(tc.in)
		if tc.want != nil {
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseChecksum(%q): got %v, want %v", tc.in, err, tc.want)
			}
			continue
		}
		if err != nil || c.String() != tc.in {
			t.Errorf("ParseChecksum(%q): got %+v, %v; want it to round-trip", tc.in, c, err)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"unknown version", Options{Version: 3}, ErrUnknownVersion},
		{"negative version", Options{Version: -1}, ErrUnknownVersion},
		{"named hash without constructor", Options{Hash: Algorithm{Name: "blake3"}}, ErrUnknownHash},
		{"constructor without name", Options{Hash: Algorithm{New: SHA512.New}}, ErrUnknownHash},
	}
	for _, tc := range tests {
		if _, err := New(bytes.NewReader(nil), tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	ts, err := New(bytes.NewReader(nil), Options{Hash: Algorithm{Name: "sha256"}})
	if err != nil || ts.Hash().Name != "sha256" || ts.Version() != Version0 {
		t.Errorf("hash named sha256 without constructor: got %v, %v; want the SHA256 default", ts, err)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	entries := []testEntry{plainFile, xattrs, dirEntry}
	tarBytes := buildTar(t, entries...)
	gz := gzipBytes(t, tarBytes)
	json := []byte(`{"id":"0123"}`)
	v0 := specSum(Version0, entries, json)
	v1 := specSum(Version1, entries, nil)
	v1sha512, err := Compute(ctx, bytes.NewReader(tarBytes), Options{Version: Version1, Hash: SHA512}, nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		input []byte
		want  string
		extra []byte
		err   error
	}{
		{"v0 with image JSON", tarBytes, v0, json, nil},
		{"v0 gzip", gz, v0, json, nil},
		{"v1", tarBytes, v1, nil, nil},
		{"v1 sha512", gz, v1sha512, nil, nil},
		{"v0 without the JSON it was computed with", tarBytes, v0, nil, ErrMismatch},
		{"v1 checksum read as dev", tarBytes, "tarsum.dev" + strings.TrimPrefix(v1, "tarsum.v1"), nil, nil},
		{"other archive", buildTar(t, plainFile), v1, nil, ErrMismatch},
		{"corrupt archive", gz[:len(gz)-10], v1, nil, ErrCorrupt},
		{"malformed checksum", tarBytes, "tarsum+sha256:zz", nil, ErrMalformedChecksum},
	}
	for _, tc := range tests {
		err := Verify(ctx, bytes.NewReader(tc.input), tc.want, tc.extra)
		if tc.err == nil {
			if err != nil {
				t.Errorf("%s: got %v, want nil", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
		}
		var mm *MismatchError
		if errors.Is(tc.err, ErrMismatch) && (!errors.As(err, &mm) || mm.Want != tc.want || !strings.HasPrefix(mm.Got, "tarsum")) {
			t.Errorf("%s: got %#v, want a *MismatchError with Want %s", tc.name, err, tc.want)
		}
		if mm != nil && !strings.Contains(err.Error(), mm.Got) {
			t.Errorf("%s: message %q: want it to name the sum got (%s)", tc.name, err, mm.Got)
		}
	}
}

func TestVerifyWithCompatibility(t *testing.T) {
	e := owned
	want := "tarsum+sha256:" + hexHash(sha256New, []byte(hexHash(sha256New, []byte(specHeader(Version0, e, true)), e.body)))
	tarBytes := buildTar(t, e)
	if err := Verify(context.Background(), bytes.NewReader(tarBytes), want, nil); !errors.Is(err, ErrMismatch) {
		t.Errorf("owner names hashed: got %v, want ErrMismatch", err)
	}
	if err := VerifyWith(context.Background(), bytes.NewReader(tarBytes), want, nil, Options{IgnoreOwnerNames: true, Version: VersionDev}); err != nil {
		t.Errorf("owner names ignored: got %v, want nil (and the version from the checksum)", err)
	}
}

// cancelAfter cancels ctx once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p[:min(len(p), 1000)])
	if c.n -= k; c.n <= 0 {
		c.cancel()
	}
	return k, err
}

func TestVerifyStopsWhenContextEnds(t *testing.T) {
	tarBytes := buildTar(t, bigFile(1<<20))
	want := specSum(Version0, []testEntry{bigFile(1 << 20)}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &cancelAfter{r: bytes.NewReader(tarBytes), n: 50_000, cancel: cancel}
	err := Verify(ctx, src, want, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("context cancelled mid-stream: got %v, want context.Canceled", err)
	}
	if _, err := Compute(ctx, bytes.NewReader(tarBytes), Options{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Compute with a cancelled context: got %v, want context.Canceled", err)
	}
}
