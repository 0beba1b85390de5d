package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// memBlob is a blob in memory that counts the reads made of it.
type memBlob struct {
	data []byte
	mu   sync.Mutex
	n    int   // ReadAt calls
	got  int64 // bytes returned
	log  [][2]int64
	fail error // if set, every read fails with it
}

func newMemBlob(b []byte) *memBlob { return &memBlob{data: b} }

func (b *memBlob) Size() int64 { return int64(len(b.data)) }

func (b *memBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return 0, b.fail
	}
	b.n++
	if off < 0 || off > int64(len(b.data)) {
		return 0, fmt.Errorf("memBlob: offset %d out of range", off)
	}
	n := copy(p, b.data[off:])
	b.got += int64(n)
	b.log = append(b.log, [2]int64{off, int64(n)})
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b *memBlob) counts() (calls int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.got
}

func (b *memBlob) reset() {
	b.mu.Lock()
	b.n, b.got, b.log = 0, 0, nil
	b.mu.Unlock()
}

// tarFile is one entry to write into a test tar.
type tarFile struct {
	hdr  tar.Header
	body []byte
}

func reg(name string, body []byte) tarFile {
	return tarFile{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)),
		ModTime: time.Unix(1700000000, 0)}, body: body}
}

func dir(name string) tarFile {
	return tarFile{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(1700000000, 0)}}
}

func makeTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatalf("write body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("close tar: %v", err)
	}
	return buf.Bytes()
}

// content returns n bytes, half text-like (compressible), half random.
func content(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	words := []string{"alpha ", "beta ", "gamma ", "delta\n", "lib/x86_64-linux-gnu/", "usr/share/doc ", "0123456789"}
	i := 0
	for i < n/2 {
		i += copy(b[i:n/2], words[rng.Intn(len(words))])
	}
	rng.Read(b[n/2:])
	return b
}

// randomTree returns a tar of nfiles files of up to maxSize bytes in a few dirs.
func randomTree(t testing.TB, seed int64, nfiles, maxSize int) ([]byte, []tarFile) {
	rng := rand.New(rand.NewSource(seed))
	if raceEnabled {
		maxSize /= 8
	}
	files := []tarFile{dir("d0/"), dir("d1/"), dir("d1/sub/")}
	dirs := []string{"d0", "d1", "d1/sub"}
	for i := 0; i < nfiles; i++ {
		size := rng.Intn(maxSize + 1)
		if i%7 == 0 {
			size = rng.Intn(100)
		}
		files = append(files, reg(fmt.Sprintf("%s/f%04d", dirs[i%len(dirs)], i), content(rng, size)))
	}
	return makeTar(t, files), files
}

func gzipOf(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipMembers compresses data as several concatenated gzip members.
func gzipMembers(t testing.TB, data []byte, parts int) []byte {
	var out []byte
	step := len(data)/parts + 1
	for i := 0; i < len(data); i += step {
		j := min(i+step, len(data))
		out = append(out, gzipOf(t, data[i:j], gzip.DefaultCompression)...)
	}
	return out
}

func zstdOf(t testing.TB, data []byte, frameSize int) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if frameSize <= 0 {
		return enc.EncodeAll(data, nil)
	}
	var out []byte
	for i := 0; i < len(data); i += frameSize {
		out = enc.EncodeAll(data[i:min(i+frameSize, len(data))], out)
	}
	return out
}

func newTestManager(t testing.TB, opts Options) *Manager {
	t.Helper()
	m, err := NewManager(opts)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return m
}
