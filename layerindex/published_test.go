package layerindex

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/sirupsen/logrus"
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
	l := m.Layer(publishedKey, UncachedBlob(blob), LayerOptions{Published: func(context.Context) ([]byte, error) { return pub, nil }})
	return l, blob
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
	if _, n := blob.counts(); n > int64(len(f.blob))/4 {
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
		lie  func(v, o *Entry, p *persistedIndex)
		// harmless: a lie the read may not depend on (a window the
		// decode of the file needs no byte of); it must still be right.
		harmless bool
	}{
		{"data offset one block late", func(v, _ *Entry, _ *persistedIndex) { v.Offset += blockSize }, false},
		{"headers and data of another file", func(v, o *Entry, _ *persistedIndex) {
			v.HeaderOff, v.Offset, v.Size, v.ContentSHA256 = o.HeaderOff, o.Offset, o.Size, o.ContentSHA256
		}, false},
		{"wrong content digest", func(v, _ *Entry, _ *persistedIndex) { v.ContentSHA256[0] ^= 1 }, false},
		{"wrong size", func(v, _ *Entry, _ *persistedIndex) { v.Size-- }, false},
		{"wrong mode", func(v, _ *Entry, _ *persistedIndex) { v.Mode |= 0o111 }, false},
		{"checkpoint window", func(_, _ *Entry, p *persistedIndex) {
			for i := range p.Checkpoints {
				p.Checkpoints[i].Window = bytes.Repeat([]byte{'x'}, len(p.Checkpoints[i].Window))
			}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p persistedIndex
			if err := decodeFile(f.pub, idxMagic, &p); err != nil {
				t.Fatal(err)
			}
			var v, o *Entry
			for _, e := range p.Entries {
				switch e.Name {
				case victim.hdr.Name:
					v = e
				case other.hdr.Name:
					o = e
				}
			}
			tc.lie(v, o, &p)
			lie, err := encodeFile(idxMagic, &p)
			if err != nil {
				t.Fatal(err)
			}
			l, _ := f.layerWith(t, lie)
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
		var p persistedIndex
		if err := decodeFile(f.pub, idxMagic, &p); err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			e.ContentSHA256 = [32]byte{}
		}
		b, _ := encodeFile(idxMagic, &p)
		return b
	}
	otherKey := func() []byte {
		var p persistedIndex
		decodeFile(f.pub, idxMagic, &p)
		p.Key = "sha256:other"
		b, _ := encodeFile(idxMagic, &p)
		return b
	}
	cases := map[string][]byte{
		"garbage":         []byte("not an index"),
		"truncated":       f.pub[:len(f.pub)/2],
		"another blob's":  otherKey(),
		"without digests": noDigest(),
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
		idx, err := parsePublished(data, publishedKey, int64(len(blob)), 1000)
		if err != nil {
			return
		}
		idx.Tar.finishChildren()
		for _, e := range idx.Tar.entries {
			if e.Offset >= 0 && e.Offset+e.Size > idx.TarSize {
				t.Fatalf("entry %q past the stream's end", e.Name)
			}
		}
	})
}
