package layerindex

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"
)

// oddTar has every header kind the walk must step over: PAX and GNU long
// names and link names, PAX xattrs, a global PAX header, devices, an empty
// file, files of every padding.
func oddTar(t *testing.T) []byte {
	long := strings.Repeat("long-directory-name/", 8)
	mt := time.Unix(1700000000, 0)
	rng := rand.New(rand.NewSource(61))
	files := []tarFile{
		{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "archive-wide"}}},
		dir("etc/"),
		reg("etc/empty", nil),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: long + "pax-file", Size: 3, Mode: 0o640, ModTime: mt, Format: tar.FormatPAX}, body: []byte("pax")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: long + "gnu-file", Size: 3, Mode: 0o600, ModTime: mt, Format: tar.FormatGNU}, body: []byte("gnu")},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/gnu-link", Linkname: long + "target", ModTime: mt, Format: tar.FormatGNU}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "etc/pax-hard", Linkname: long + "pax-file", ModTime: mt, Format: tar.FormatPAX}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/xattr", Size: 1, Mode: 0o4755, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.capability": "\x01\x00"}}, body: []byte("x")},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600, ModTime: mt}},
	}
	for i, n := range []int{1, 511, 512, 513, 4095, 4096, 4097, 300 << 10, 1 << 20} {
		files = append(files, reg(fmt.Sprintf("data/f%d", i), content(rng, n)))
	}
	return makeTar(t, files)
}

// The header walk of an uncompressed tar gives the same index as reading
// the same tar through gzip, data offsets included, and fetches only small
// ranges around the headers.
func TestTarWalkMatchesStream(t *testing.T) {
	ctx := context.Background()
	tarData := oddTar(t)
	blob := newMemBlob(tarData)
	tl := newTestManager(t, Options{}).Layer("tar", UncachedBlob(blob), LayerOptions{})
	tx, err := tl.Index(ctx)
	if err != nil {
		t.Fatalf("tar Index: %v", err)
	}
	gl := newTestManager(t, Options{}).Layer("gz", UncachedBlob(newMemBlob(gzipOf(t, tarData, 6))), LayerOptions{})
	gx, err := gl.Index(ctx)
	if err != nil {
		t.Fatalf("gzip Index: %v", err)
	}
	// Only a streaming pass records where headers start and hashes content.
	for _, e := range append(gx.Entries(), gx.Root()) {
		e.HeaderOff, e.ContentSHA256 = 0, [32]byte{}
	}
	if !reflect.DeepEqual(tx.Entries(), gx.Entries()) || !reflect.DeepEqual(tx.Root(), gx.Root()) {
		for i := range max(len(tx.Entries()), len(gx.Entries())) {
			var a, b *Entry
			if i < len(tx.Entries()) {
				a = tx.Entries()[i]
			}
			if i < len(gx.Entries()) {
				b = gx.Entries()[i]
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("entry %d: got %+v from the header walk, want %+v as from the stream", i, a, b)
			}
		}
	}
	if e, ok := tx.Lookup(strings.Repeat("long-directory-name/", 8) + "gnu-file"); !ok || string(readFile(ctx, t, tl, e)) != "gnu" {
		t.Errorf("GNU long name: got %+v", e)
	}

	// Reads: one window per entry at most, none larger than a window.
	var fetched int64
	for _, r := range blob.log {
		if r[1] > tarWalkWindow {
			t.Errorf("read of %d bytes at %d, want at most %d", r[1], r[0], tarWalkWindow)
		}
		fetched += r[1]
	}
	if limit := int64(len(tx.Entries())+4) * tarWalkWindow; fetched > limit || fetched > int64(len(tarData))/4 {
		t.Errorf("index pass fetched %d bytes in %d reads of a %d-byte tar, want at most %d", fetched, len(blob.log), len(tarData), limit)
	}
	t.Logf("index pass: %d bytes in %d reads of a %d-byte tar with %d entries", fetched, len(blob.log), len(tarData), tx.Len())
	if p := tl.Progress(); p.State != "ready" || p.Done != p.Total || p.Total != int64(len(tarData)) {
		t.Errorf("Progress: got %+v, want ready at the end of the blob", p)
	}
}

// A broken tar is told apart from a broken blob, as on the stream path.
func TestTarWalkErrors(t *testing.T) {
	ctx := context.Background()
	tarData := oddTar(t)
	blobErr := errors.New("registry went away")
	for _, tc := range []struct {
		name    string
		blob    []byte
		fail    error
		wantErr error
	}{
		{"truncated in data", tarData[:len(tarData)-(300<<10)], nil, ErrBadTar},
		{"truncated in a header", tarData[:len(tarData)/2/512*512+100], nil, ErrBadTar},
		{"bad checksum", func() []byte {
			b := append([]byte(nil), tarData...)
			b[1024+150] ^= 1 // the checksum field of the second header
			return b
		}(), nil, ErrBadTar},
		{"blob read fails", tarData, blobErr, blobErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMemBlob(tc.blob)
			b.fail = tc.fail
			l := newTestManager(t, Options{}).Layer("k", UncachedBlob(b), LayerOptions{})
			_, err := l.Index(ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Index: got %v, want %v", err, tc.wantErr)
			}
		})
	}
	// The blob error happens after the format check: fail reads past the start.
	l := newTestManager(t, Options{}).Layer("late", UncachedBlob(&gatedBlob{memBlob: newMemBlob(tarData), from: 512, to: int64(len(tarData)), fail: blobErr}), LayerOptions{})
	if _, err := l.Index(ctx); !errors.Is(err, blobErr) || errors.Is(err, ErrBadTar) {
		t.Errorf("Index with reads failing after the first header: got %v, want the blob's error", err)
	}
}
