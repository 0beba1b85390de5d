package layerindex

import (
	"archive/tar"
	"bytes"
	stdflate "compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
)

// The fuzz targets below run their seeds (real blobs of every format, and
// the hostile shapes that once broke something) as part of go test; run
// one for longer with go test -run XXX -fuzz FuzzName -fuzztime 45s. Each
// checks what must hold for any input: no panic, no hang, and never a
// byte that differs from what a reference decoder gives.

// fuzzCtx bounds one fuzz input: a hang fails it instead of the run.
func fuzzCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fuzzManager is a Manager sized for small inputs: small reads and
// checkpoint spacing, so restarts are exercised; a small memory bound.
func fuzzManager(t *testing.T, store FileStore) *Manager {
	return newTestManager(t, Options{ReadSize: 4 << 10, Spacing: 8 << 10, MaxEntries: 5000, MaxIndexBytes: 64 << 20,
		Store: store, Logger: quietLogger(), MaxCursors: 4})
}

func seedTars(t testing.TB) [][]byte {
	long := strings.Repeat("x", 300)
	small := makeTar(t, []tarFile{dir("d/"), reg("d/a", []byte("hello")), reg("b", bytes.Repeat([]byte("0123456789"), 1500)),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "d/a"}}, reg("d/a", []byte("replaced")),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "s", Linkname: "../x"}}, reg(long+"/"+long, []byte("long name"))})
	tree, _ := randomTree(t, 3, 4, 3<<10)
	return [][]byte{small, tree, makeTar(t, nil)}
}

// checkTarStream reads the layer's files and tar stream and compares every
// byte served with want, the uncompressed stream a reference decoder gave
// (nil: the reference failed, so nothing may be served as good).
func checkTarStream(ctx context.Context, t *testing.T, l *Layer, want []byte, off, n int) {
	size, err := l.TarSize(ctx)
	if err != nil {
		return // refused: fine for any input
	}
	if want == nil {
		t.Fatalf("TarSize: %d, but the reference decoder rejects the blob", size)
	}
	if size != int64(len(want)) {
		t.Fatalf("TarSize: got %d, want %d", size, len(want))
	}
	p := make([]byte, n%(64<<10))
	got, err := l.TarReadAt(ctx, p, int64(off)%(size+1))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("TarReadAt after a good pass: %v", err)
	}
	start := int64(off) % (size + 1)
	if !bytes.Equal(p[:got], want[start:start+int64(got)]) {
		t.Fatalf("TarReadAt(%d, %d): wrong bytes", start, len(p))
	}
	x, err := l.Index(ctx)
	if err != nil {
		return
	}
	for _, e := range x.Entries() {
		if e.Name == "" || strings.HasPrefix(e.Name, "/") || strings.Contains("/"+e.Name+"/", "/../") || strings.Contains("/"+e.Name+"/", "/./") {
			t.Fatalf("entry name %q is not clean", e.Name)
		}
		if f, ok := x.Lookup(e.Name); !ok || f != e {
			t.Fatalf("Lookup(%q) does not give the entry back", e.Name)
		}
		r, err := l.OpenFile(ctx, e)
		if err != nil {
			continue
		}
		t2, _ := x.Resolve(e)
		buf := make([]byte, min(r.Size(), 1<<20))
		k, err := r.ReadAt(ctx, buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		if t2.Offset >= 0 && !bytes.Equal(buf[:k], want[t2.Offset:t2.Offset+int64(k)]) {
			t.Fatalf("file %q: wrong bytes", e.Name)
		}
	}
}

func FuzzTarIndex(f *testing.F) {
	for _, s := range seedTars(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.HasPrefix(data, gzipMagic) || bytes.HasPrefix(data, zstdMagic) || len(data) >= 4 && data[0]&0xf0 == 0x50 {
			return // another format: its own target
		}
		ctx := fuzzCtx(t)
		l := fuzzManager(t, nil).Layer("k", UncachedBlob(newMemBlob(data)), LayerOptions{})
		checkTarStream(ctx, t, l, data, len(data)/3, 700)
	})
}

// FuzzGzipDecoder: the index pass and reads restarted at its checkpoints
// give exactly what a reference decoder gives, or an error.
func FuzzGzipDecoder(f *testing.F) {
	for _, tarData := range seedTars(f) {
		for _, level := range []int{0, 1, 9} {
			f.Add(gzipOf(f, tarData, level), uint32(len(tarData)/2), uint16(5000))
		}
		f.Add(gzipMembers(f, tarData, 3), uint32(100), uint16(9000))
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Header = gzip.Header{Comment: strings.Repeat("c", 600), Name: "layer.tar", Extra: []byte("extra field")}
		zw.Write(tarData)
		zw.Close()
		f.Add(buf.Bytes(), uint32(len(tarData)-100), uint16(3000))
	}
	f.Fuzz(func(t *testing.T, blob []byte, off uint32, n uint16) {
		if !bytes.HasPrefix(blob, gzipMagic) {
			return
		}
		want, _ := refGunzip(blob)
		ctx := fuzzCtx(t)
		l := fuzzManager(t, nil).Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
		l.sgState.sg.set(nil) // plain gzip: eStargz has its own target
		checkTarStream(ctx, t, l, want, int(off), int(n))
	})
}

// refGunzip decodes every gzip member of blob with code apart from the
// package's: the standard library's flate, and a header parser of its own
// (the standard library's gzip.Reader refuses names and comments of 512
// bytes or more, which RFC 1952 allows).
func refGunzip(blob []byte) ([]byte, error) {
	in := bytes.NewReader(blob)
	var out []byte
	for in.Len() > 0 {
		var h [10]byte
		if _, err := io.ReadFull(in, h[:]); err != nil || h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
			return nil, fmt.Errorf("header")
		}
		if h[3]&4 != 0 {
			var x [2]byte
			if _, err := io.ReadFull(in, x[:]); err != nil {
				return nil, err
			}
			if _, err := in.Seek(int64(binary.LittleEndian.Uint16(x[:])), io.SeekCurrent); err != nil || in.Len() == 0 && binary.LittleEndian.Uint16(x[:]) > 0 {
				return nil, fmt.Errorf("extra")
			}
		}
		for _, f := range []byte{8, 16} {
			for h[3]&f != 0 {
				b, err := in.ReadByte()
				if err != nil {
					return nil, err
				}
				if b == 0 {
					break
				}
			}
		}
		if h[3]&2 != 0 {
			if _, err := io.ReadFull(in, make([]byte, 2)); err != nil {
				return nil, err
			}
		}
		member, err := io.ReadAll(io.LimitReader(stdflate.NewReader(in), 64<<20))
		if err != nil {
			return nil, err
		}
		var tr [8]byte
		if _, err := io.ReadFull(in, tr[:]); err != nil {
			return nil, err
		}
		if binary.LittleEndian.Uint32(tr[:4]) != crc32.ChecksumIEEE(member) || binary.LittleEndian.Uint32(tr[4:]) != uint32(len(member)) {
			return nil, fmt.Errorf("checksum")
		}
		out = append(out, member...)
	}
	return out, nil
}

// FuzzZstdDecoder: as FuzzGzipDecoder, restarts at frame starts.
func FuzzZstdDecoder(f *testing.F) {
	for _, tarData := range seedTars(f) {
		f.Add(zstdOf(f, tarData, 0), uint32(len(tarData)/2), uint16(5000))
		f.Add(zstdOf(f, tarData, 4<<10), uint32(len(tarData)/3), uint16(9000))
	}
	f.Fuzz(func(t *testing.T, blob []byte, off uint32, n uint16) {
		if !bytes.HasPrefix(blob, zstdMagic) && !(len(blob) >= 4 && blob[0]&0xf0 == 0x50 && blob[1] == 0x2a && blob[2] == 0x4d && blob[3] == 0x18) {
			return
		}
		var want []byte
		if d, err := zstd.NewReader(bytes.NewReader(blob), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20)); err == nil {
			if out, err := io.ReadAll(io.LimitReader(d, 64<<20)); err == nil {
				want = out
			}
			d.Close()
		}
		ctx := fuzzCtx(t)
		l := fuzzManager(t, nil).Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
		checkTarStream(ctx, t, l, want, int(off), int(n))
	})
}

// FuzzEStargzTOC: any blob with an eStargz footer, whatever its TOC says,
// indexes or fails cleanly, and every file it serves passed its chunk
// digests (checked inside): here, no panic and no hang.
func FuzzEStargzTOC(f *testing.F) {
	for _, tarData := range seedTars(f) {
		sg, _ := buildStargz(f, tarData, 4<<10)
		f.Add(sg)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		ctx := fuzzCtx(t)
		l := fuzzManager(t, nil).Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			return
		}
		for _, e := range x.Entries() {
			if r, err := l.OpenFile(ctx, e); err == nil {
				buf := make([]byte, min(r.Size(), 1<<20))
				r.ReadAt(ctx, buf, 0)
			}
		}
	})
}

// mapStore is a FileStore in memory.
type mapStore struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (s *mapStore) PutFile(_ context.Context, name string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = map[string][]byte{}
	}
	s.files[name] = bytes.Clone(data)
	return nil
}

func (s *mapStore) GetFile(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.files[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
}

// withFileHeader wraps a payload as a persisted file with a valid header
// and checksum: what a damaged or hostile cache directory may hold.
func withFileHeader(magic string, payload []byte) []byte {
	out := append([]byte(magic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[8:], persistVersion)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(payload)))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(payload, castagnoli))
	return append(out, payload...)
}

// FuzzPersistedIndex: a persisted index with a valid header and checksum
// but any payload (a hostile cache directory) is refused or used without
// a panic, a hang, or a wrong byte of the blob it claims to index.
func FuzzPersistedIndex(f *testing.F) {
	tars := seedTars(f)
	blobs := map[string][]byte{"tar": tars[0], "gzip": gzipOf(f, tars[0], 6), "zstd": zstdOf(f, tars[0], 4<<10)}
	for _, name := range []string{"tar", "gzip", "zstd"} {
		st := &mapStore{}
		m := newTestManager(f, Options{ReadSize: 4 << 10, Spacing: 8 << 10, Store: st})
		if _, err := m.Layer("k", UncachedBlob(newMemBlob(blobs[name])), LayerOptions{}).Index(context.Background()); err != nil {
			f.Fatal(err)
		}
		data := st.files[fileName("k")+".idx"]
		f.Add(uint8(len(f.Name())%3), data[24:])
	}
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		name := []string{"tar", "gzip", "zstd"}[which%3]
		blob := blobs[name]
		var want []byte
		switch name {
		case "tar":
			want = blob
		default:
			want = tars[0]
		}
		st := &mapStore{files: map[string][]byte{fileName("k") + ".idx": withFileHeader(idxMagic, payload)}}
		ctx := fuzzCtx(t)
		l := fuzzManager(t, st).Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			return
		}
		for _, e := range x.Entries() {
			x.Children(e.Name)
			x.Resolve(e)
		}
		checkTarStreamPersisted(ctx, t, l, want)
	})
}

// checkTarStreamPersisted reads the tar stream through a persisted index,
// which may lie about sizes and restart points: what is served without an
// error must be the blob's own bytes.
func checkTarStreamPersisted(ctx context.Context, t *testing.T, l *Layer, want []byte) {
	size, err := l.TarSize(ctx)
	if err != nil || size <= 0 {
		return
	}
	for _, off := range []int64{0, size / 2, size - 1, int64(len(want)) / 2} {
		p := make([]byte, 3000)
		n, err := l.TarReadAt(ctx, p, off)
		if err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		if off >= int64(len(want)) {
			if n > 0 {
				t.Fatalf("TarReadAt(%d): %d bytes past the stream's real end", off, n)
			}
			continue
		}
		if end := min(off+int64(n), int64(len(want))); !bytes.Equal(p[:end-off], want[off:end]) || off+int64(n) > int64(len(want)) {
			t.Fatalf("TarReadAt(%d): wrong bytes through a persisted index", off)
		}
	}
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// zstdChunkedParts splits a zstd:chunked blob into the bytes before its
// TOC's skippable frame and the TOC JSON.
func zstdChunkedParts(t testing.TB, blob []byte, pos string) ([]byte, []byte) {
	p, err := parseZstdChunkedPosition(pos, int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	toc, err := dec.DecodeAll(blob[p.off:p.off+p.size], nil)
	if err != nil {
		t.Fatal(err)
	}
	return blob[:p.off-8], toc
}

// withZstdChunkedTOC appends toc (JSON), compressed, in a skippable frame
// to data, then the footer pointing at it.
func withZstdChunkedTOC(data, toc []byte) []byte {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	comp := enc.EncodeAll(toc, nil)
	out := append([]byte(nil), data...)
	tocOff := int64(len(out)) + 8
	frame := func(b []byte) {
		out = binary.LittleEndian.AppendUint32(out, 0x184D2A50)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		out = append(out, b...)
	}
	frame(comp)
	footer := make([]byte, zstdChunkedFooterSize)
	for i, v := range []int64{tocOff, int64(len(comp)), int64(len(toc)), zstdChunkedTOCType} {
		binary.LittleEndian.PutUint64(footer[8*i:], uint64(v))
	}
	copy(footer[56:], zstdChunkedMagic)
	frame(footer)
	return out
}

// FuzzZstdChunkedTOC: any TOC JSON in front of any frames is refused or
// served without a panic or a hang, and every file read without an error
// holds exactly the bytes its chunk digests commit to.
func FuzzZstdChunkedTOC(f *testing.F) {
	for _, tarData := range seedTars(f) {
		blob, ann := buildZstdChunked(f, tarData, 4<<10)
		data, toc := zstdChunkedParts(f, blob, ann[ZstdChunkedPositionAnnotation])
		f.Add(data, toc)
	}
	f.Add([]byte{}, []byte(`{"version":1,"entries":[{"type":"reg","name":"a","size":5,"offset":0,"endOffset":1000000,"digest":"sha256:00"}]}`))
	f.Add([]byte{}, []byte(`{"version":1,"entries":[{"type":"chunk","name":"a"},{"type":"hardlink","name":"b","linkName":"b"}]}`))
	f.Fuzz(func(t *testing.T, data, toc []byte) {
		ctx := fuzzCtx(t)
		l := fuzzManager(t, nil).Layer("k", UncachedBlob(newMemBlob(withZstdChunkedTOC(data, toc))), LayerOptions{})
		x, err := l.Index(ctx)
		if err != nil {
			return
		}
		zc, _ := l.zstdChunked(ctx)
		if zc == nil {
			t.Fatal("Index succeeded from a TOC, but the layer has no zstd:chunked view")
		}
		for _, e := range x.Entries() {
			t, err := x.Resolve(e)
			if err != nil || t.Type != tar.TypeReg || zc.large[t.Name] {
				continue
			}
			r, err := l.OpenFile(ctx, e)
			if err != nil {
				continue
			}
			buf := make([]byte, min(r.Size(), 1<<20))
			n, err := r.ReadAt(ctx, buf, 0)
			if err != nil && !errors.Is(err, io.EOF) {
				continue
			}
			for _, c := range zc.chunks[t.Name] {
				if c.FileOff+c.Size > int64(n) {
					break
				}
				if got := c.Digest.Algorithm().FromBytes(buf[c.FileOff : c.FileOff+c.Size]); got != c.Digest {
					panic(fmt.Sprintf("%s: served bytes at %d hash to %s, the TOC says %s", t.Name, c.FileOff, got, c.Digest))
				}
			}
		}
	})
}
