package layerindex

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/blobio"
)

// publishedFixture is a gzip layer and the index a first Manager built
// and published for it.
type publishedFixture struct {
	blob  []byte
	files []tarFile
	pub   []byte
}

const publishedKey = "sha256:published"

func newPublishedFixture(t *testing.T) publishedFixture {
	t.Helper()
	tarData, files := randomTree(t, 12, 40, 120<<10)
	blob := gzipOf(t, tarData, gzip.DefaultCompression)
	m := newTestManager(t, Options{Spacing: 64 << 10})
	pub, err := m.Layer(publishedKey, UncachedBlob(newMemBlob(blob)), LayerOptions{}).PublishedIndex(context.Background())
	if err != nil {
		t.Fatalf("PublishedIndex: %v", err)
	}
	return publishedFixture{blob: blob, files: files, pub: pub}
}

// layerWith returns a fresh Manager's Layer over the fixture's blob that
// is given pub as its published index.
func (f publishedFixture) layerWith(t *testing.T, pub []byte) (*Layer, *memBlob) {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	blob := newMemBlob(f.blob)
	m := newTestManager(t, Options{Spacing: 64 << 10, Logger: quiet})
	l := m.Layer(publishedKey, UncachedBlob(blob), LayerOptions{Published: func(context.Context) (blobio.ReaderAt, error) {
		if pub == nil {
			return nil, nil
		}
		return newMemBlob(pub), nil
	}})
	return l, blob
}

// splitPublished decodes a published index's payload and returns its
// windows apart.
func splitPublished(t *testing.T, pub []byte) (*persistedIndex, []byte) {
	t.Helper()
	n := publishedHeaderSize + int(binary.LittleEndian.Uint64(pub[12:]))
	var p persistedIndex
	if err := decodeFile(pub[:n], idxMagic, &p); err != nil {
		t.Fatal(err)
	}
	return &p, pub[n:]
}

func joinPublished(t *testing.T, p *persistedIndex, windows []byte) []byte {
	t.Helper()
	b, err := encodeFile(idxMagic, p)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, windows...)
}

// readNamed opens name in l's index and reads it whole.
func readNamed(ctx context.Context, l *Layer, name string) ([]byte, error) {
	x, err := l.Index(ctx)
	if err != nil {
		return nil, err
	}
	e, ok := x.Lookup(name)
	if !ok {
		return nil, errors.New("no entry " + name)
	}
	r, err := l.OpenFile(ctx, e)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, r.Size())
	n, err := r.ReadAt(ctx, buf, 0)
	if errors.Is(err, io.EOF) && n == len(buf) {
		err = nil
	}
	return buf[:n], err
}

// A published index serves the first read of a file with no index pass:
// the bytes are right and only the blob around the file is fetched.
func TestPublishedIndexServesFirstRead(t *testing.T) {
	ctx := context.Background()
	f := newPublishedFixture(t)
	l, blob := f.layerWith(t, f.pub)
	want := f.files[len(f.files)-3]
	got, err := readNamed(ctx, l, want.hdr.Name)
	if err != nil {
		t.Fatalf("read %s: %v", want.hdr.Name, err)
	}
	if !bytes.Equal(got, want.body) {
		t.Fatalf("read %s: got %d bytes, not the file's %d", want.hdr.Name, len(got), len(want.body))
	}
	if _, n := blob.counts(); !raceEnabled && n > int64(len(f.blob))/4 { // -race shrinks the files: then one read spans the layer
		t.Errorf("blob bytes read for one file: got %d of %d, want a small part", n, len(f.blob))
	}
	if st := l.Progress().State; st != IndexPublished {
		t.Errorf("index state: got %q, want %q", st, IndexPublished)
	}
	x, _ := l.Index(ctx)
	if x.Len() < len(f.files) {
		t.Errorf("entries: got %d, want at least %d", x.Len(), len(f.files))
	}
}

// An index that lies about an entry never makes a read return wrong
// bytes: the first read of that file fails with ErrPublishedMismatch, the
// index is dropped, and the layer's own pass serves every read after it.
func TestPublishedIndexLies(t *testing.T) {
	ctx := context.Background()
	f := newPublishedFixture(t)
	victim, other := f.files[len(f.files)-3], f.files[len(f.files)-9]
	cases := []struct {
		name string
		lie  func(v, o *Entry, p *persistedIndex, windows []byte)
		// harmless: a lie the read may not depend on (a window the
		// decode of the file needs no byte of); it must still be right.
		harmless bool
	}{
		{"data offset one block late", func(v, _ *Entry, _ *persistedIndex, _ []byte) { v.Offset += blockSize }, false},
		{"headers and data of another file", func(v, o *Entry, _ *persistedIndex, _ []byte) {
			v.HeaderOff, v.Offset, v.Size, v.ContentSHA256 = o.HeaderOff, o.Offset, o.Size, o.ContentSHA256
		}, false},
		{"wrong content digest", func(v, _ *Entry, _ *persistedIndex, _ []byte) { v.ContentSHA256[0] ^= 1 }, false},
		{"wrong size", func(v, _ *Entry, _ *persistedIndex, _ []byte) { v.Size-- }, false},
		{"wrong mode", func(v, _ *Entry, _ *persistedIndex, _ []byte) { v.Mode |= 0o111 }, false},
		{"checkpoint windows", func(_, _ *Entry, _ *persistedIndex, windows []byte) {
			copy(windows, bytes.Repeat([]byte{'x'}, len(windows)))
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, windows := splitPublished(t, f.pub)
			windows = bytes.Clone(windows)
			var v, o *Entry
			for _, e := range p.Entries {
				switch e.Name {
				case victim.hdr.Name:
					v = e
				case other.hdr.Name:
					o = e
				}
			}
			tc.lie(v, o, p, windows)
			l, _ := f.layerWith(t, joinPublished(t, p, windows))
			got, err := readNamed(ctx, l, victim.hdr.Name)
			if err == nil {
				if !bytes.Equal(got, victim.body) {
					t.Fatalf("read through the lying index: %d wrong bytes served", len(got))
				}
				if !tc.harmless {
					t.Fatalf("read through the lying index: no error")
				}
				return
			}
			if !errors.Is(err, ErrPublishedMismatch) {
				t.Fatalf("read through the lying index: got %v, want ErrPublishedMismatch", err)
			}
			if !l.PublishedDropped() {
				t.Fatal("the lying index is still in use")
			}
			for _, want := range []tarFile{victim, other} {
				got, err := readNamed(ctx, l, want.hdr.Name)
				if err != nil || !bytes.Equal(got, want.body) {
					t.Fatalf("read %s after the drop: %d bytes, %v; want the file's %d", want.hdr.Name, len(got), err, len(want.body))
				}
			}
		})
	}
}

// A published index that cannot be used (damaged, made for another blob,
// without the digests a check needs) is refused and the layer indexed by
// its own pass.
func TestPublishedIndexRefused(t *testing.T) {
	ctx := context.Background()
	f := newPublishedFixture(t)
	noDigest := func() []byte {
		p, windows := splitPublished(t, f.pub)
		for _, e := range p.Entries {
			e.ContentSHA256 = [32]byte{}
		}
		return joinPublished(t, p, windows)
	}
	otherKey := func() []byte {
		p, windows := splitPublished(t, f.pub)
		p.Key = "sha256:other"
		return joinPublished(t, p, windows)
	}
	windowsCut := func() []byte {
		p, windows := splitPublished(t, f.pub)
		return joinPublished(t, p, windows[:len(windows)-1])
	}
	cases := map[string][]byte{
		"garbage":         []byte("not an index"),
		"truncated":       f.pub[:len(f.pub)/2],
		"another blob's":  otherKey(),
		"without digests": noDigest(),
		"windows cut":     windowsCut(),
		"none":            nil,
	}
	want := f.files[len(f.files)-1]
	for name, pub := range cases {
		t.Run(name, func(t *testing.T) {
			l, blob := f.layerWith(t, pub)
			got, err := readNamed(ctx, l, want.hdr.Name)
			if err != nil || !bytes.Equal(got, want.body) {
				t.Fatalf("read %s: %d bytes, %v", want.hdr.Name, len(got), err)
			}
			if _, n := blob.counts(); n < int64(len(f.blob)) {
				t.Errorf("blob bytes read: got %d, want the whole %d (an index pass)", n, len(f.blob))
			}
		})
	}
}

// FuzzPublishedIndex: a published index from a registry is hostile input;
// parsing it never panics, and one it accepts holds entries inside the
// stream with checkable headers.
func FuzzPublishedIndex(f *testing.F) {
	tarData, _ := randomTree(f, 5, 6, 8<<10)
	blob := gzipOf(f, tarData, gzip.DefaultCompression)
	m := newTestManager(f, Options{Spacing: 16 << 10})
	pub, err := m.Layer(publishedKey, UncachedBlob(newMemBlob(blob)), LayerOptions{}).PublishedIndex(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pub)
	f.Add(pub[:len(pub)-7])
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, offs, err := readPublished(context.Background(), newMemBlob(data), publishedKey, int64(len(blob)), 1000)
		if err != nil {
			return
		}
		for i, off := range offs {
			if off < publishedHeaderSize || off > int64(len(data)) || idx.Checkpoints[i].Window != nil {
				t.Fatalf("window %d at %d, outside the index", i, off)
			}
		}
		idx.Tar.finishChildren()
		for _, e := range idx.Tar.entries {
			if e.Offset >= 0 && e.Offset+e.Size > idx.TarSize {
				t.Fatalf("entry %q past the stream's end", e.Name)
			}
		}
	})
}
