package layerindex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"

	stdgzip "compress/gzip"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
)

func inflateAll(t testing.TB, blob []byte, span int64) ([]byte, error) {
	t.Helper()
	br := newBlobReader(context.Background(), newMemBlob(blob), 0, span)
	f := newGzipStream(br)
	var out []byte
	buf := make([]byte, 100<<10)
	for {
		n, err := f.read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func stdGzip(t testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	w, _ := stdgzip.NewWriterLevel(&buf, level)
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func TestInflateMatchesSource(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	size := 3 << 20
	if raceEnabled {
		size = 200 << 10
	}
	data := content(rng, size)
	// Long runs exercise overlapping copies; zeros, stored blocks.
	data = append(data, bytes.Repeat([]byte("ab"), size/30)...)
	data = append(data, make([]byte, size/10)...)
	cases := []struct {
		name string
		blob []byte
	}{
		{"std-default", stdGzip(t, data, stdgzip.DefaultCompression)},
		{"std-best", stdGzip(t, data, stdgzip.BestCompression)},
		{"std-speed", stdGzip(t, data, stdgzip.BestSpeed)},
		{"std-huffman-only", stdGzip(t, data, stdgzip.HuffmanOnly)},
		{"std-stored", stdGzip(t, data, stdgzip.NoCompression)},
		{"klauspost-default", gzipOf(t, data, gzip.DefaultCompression)},
		{"klauspost-speed", gzipOf(t, data, gzip.BestSpeed)},
		{"klauspost-stateless", gzipOf(t, data, gzip.StatelessCompression)},
		{"members", gzipMembers(t, data, 4)},
		{"empty", stdGzip(t, nil, stdgzip.DefaultCompression)},
	}
	for _, tc := range cases {
		for _, span := range []int64{1 << 20, 4099} {
			got, err := inflateAll(t, tc.blob, span)
			want := data
			if tc.name == "empty" {
				want = nil
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s span %d: got %d bytes, err %v; want %d equal bytes", tc.name, span, len(got), err, len(want))
			}
		}
	}
}

// Every checkpoint taken on a full pass resumes to the same bytes.
func TestInflateResume(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	size := 2 << 20
	if raceEnabled {
		size = 300 << 10
	}
	data := content(rng, size)
	for _, blob := range [][]byte{stdGzip(t, data, 6), gzipOf(t, data, gzip.BestSpeed), gzipMembers(t, data, 3), stdGzip(t, data, 0)} {
		mb := newMemBlob(blob)
		br := newBlobReader(context.Background(), mb, 0, 64<<10)
		f := newGzipStream(br)
		var cps []checkpoint
		f.onCheckpoint = func(cp flate.InflateCheckpoint) {
			cps = append(cps, checkpoint{UOff: cp.UncompressedOffset, COff: cp.CompressedOffset, Bit: cp.BitOffset,
				Window: append([]byte(nil), cp.Window...)})
		}
		buf := make([]byte, 32<<10)
		for {
			_, err := f.read(buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(cps) < 3 {
			t.Fatalf("got %d checkpoints, want several", len(cps))
		}
		for _, cp := range cps {
			br := newBlobReader(context.Background(), mb, cp.COff, 64<<10)
			r, err := resumeGzipStream(nil, br, cp)
			if err != nil {
				t.Fatalf("resume at %d: %v", cp.UOff, err)
			}
			got := make([]byte, min(100000, int64(len(data))-cp.UOff))
			n, err := io.ReadFull(readerFunc(r.read), got)
			if err != nil || !bytes.Equal(got[:n], data[cp.UOff:cp.UOff+int64(n)]) {
				t.Fatalf("resume at %d (byte %d bit %d): got %d bytes, err %v, equal %v", cp.UOff, cp.COff, cp.Bit, n, err, bytes.Equal(got[:n], data[cp.UOff:cp.UOff+int64(n)]))
			}
		}
	}
}

func TestInflateCorrupt(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	data := content(rng, 500<<10)
	good := stdGzip(t, data, 6)
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x55
		return b
	}
	cases := []struct {
		name string
		blob []byte
	}{
		{"truncated-half", good[:len(good)/2]},
		{"truncated-trailer", good[:len(good)-3]},
		{"truncated-header", good[:5]},
		{"bad-magic", append([]byte{0x1f, 0x8c}, good[2:]...)},
		{"flip-early", flip(100)},
		{"flip-middle", flip(len(good) / 2)},
		{"flip-crc", flip(len(good) - 6)},
		{"flip-size", flip(len(good) - 2)},
		{"trailing-garbage", append(append([]byte(nil), good...), "garbage!!!!!"...)},
	}
	for _, tc := range cases {
		got, err := inflateAll(t, tc.blob, 1<<20)
		if err == nil {
			t.Errorf("%s: got no error (%d bytes), want an error", tc.name, len(got))
			continue
		}
		if !errors.Is(err, errCorrupt) && !errors.Is(err, errTruncated) {
			t.Errorf("%s: got error %v, want errCorrupt or errTruncated", tc.name, err)
		}
		// Bytes before the error are a prefix of the data: never wrong bytes
		// except what the final CRC check catches (not handed out as valid).
		_ = got
	}
}
