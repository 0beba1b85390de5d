package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
)

// publishedFile is a regular file of a published index.
type publishedFile struct {
	p     *publishedIndex
	chain []*Entry // the entry opened, then each hardlink's target
	t     *Entry   // the entry holding the data
	dec   *decoding
}

func (f *publishedFile) Size() int64 { return f.t.Size }

// ReadAt checks the file first (once per entry and mount), then reads it
// as fileReader does.
func (f *publishedFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	l := f.p.l
	for _, e := range f.chain {
		if _, ok := f.p.verified.Load(e); ok {
			continue
		}
		dec := f.dec
		if e != f.t {
			var err error
			if dec, err = f.p.newDecoding(ctx, e); err != nil {
				return 0, err
			}
		}
		if err := checkEntry(ctx, dec, e); err != nil {
			if ctx.Err() != nil {
				return 0, err
			}
			err = fmt.Errorf("layer %s: %q: %w: %w", l.key, e.Name, ErrPublishedMismatch, err)
			l.dropPublished(ctx, err)
			return 0, err
		}
		f.p.verified.Store(e, struct{}{})
	}
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", l.key, off)
	}
	if off >= f.t.Size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), f.t.Size-off)]
	n, err := f.dec.readAt(ctx, want, f.t.Offset+off)
	if err == nil && n < len(want) || errors.Is(err, io.EOF) && n < len(want) {
		err = fmt.Errorf("layer %s: tar stream ended inside a file: %w", l.key, io.ErrUnexpectedEOF)
	} else if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && len(want) < len(p) {
		err = io.EOF
	}
	return n, err
}

// checkEntry reads e's headers and data from the tar stream and compares
// them with e: what the headers say (name, type, mode, owner, times, size,
// link, xattrs), where the data starts, and the content's sha256. An error
// that is not the caller's cancellation means the index lied (or the blob
// is broken, which the cache's digest check reports on its own).
func checkEntry(ctx context.Context, d *decoding, e *Entry) error {
	end := e.Offset
	if e.Type == tar.TypeReg {
		end += e.Size
	}
	cr := &countingReader{r: d.reader(ctx, e.HeaderOff, end)}
	tr := tar.NewReader(cr)
	hdr, err := tr.Next()
	if err != nil {
		if cr.err != nil {
			return cr.err
		}
		return fmt.Errorf("no tar header at %d: %w", e.HeaderOff, err)
	}
	got := entryOf(hdr, e.HeaderOff+cr.n)
	if got == nil {
		return fmt.Errorf("header at %d is no file", e.HeaderOff)
	}
	name := e.Name
	if e.HeaderName != "" {
		name = e.HeaderName
	}
	switch {
	case got.Name != name:
		return fmt.Errorf("the header at %d names %q", e.HeaderOff, got.Name)
	case got.Offset != e.Offset:
		return fmt.Errorf("data at %d, not %d", got.Offset, e.Offset)
	case got.Type != e.Type || got.Mode != e.Mode || got.UID != e.UID || got.GID != e.GID || got.Size != e.Size ||
		!got.ModTime.Equal(e.ModTime) || got.Linkname != e.Linkname || !maps.Equal(got.Xattrs, e.Xattrs):
		return fmt.Errorf("the header at %d differs from the index's entry", e.HeaderOff)
	}
	if e.Type != tar.TypeReg {
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, tr); err != nil {
		if cr.err != nil {
			return cr.err
		}
		return fmt.Errorf("content: %w", err)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, e.ContentSHA256[:]) {
		return fmt.Errorf("content sha256 %x, the index says %x", sum, e.ContentSHA256)
	}
	return nil
}
