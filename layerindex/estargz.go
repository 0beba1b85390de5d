package layerindex

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// stargzLayer is an eStargz blob opened through its TOC.
type stargzLayer struct {
	l        *Layer
	r        *estargz.Reader
	verifier estargz.TOCEntryVerifier
	index    *Index
	tocOff   int64
	tail     []byte // the blob from tocOff to its end: TOC and footer
}

// stargzState remembers whether a layer is eStargz, once known.
type stargzState struct {
	mu      sync.Mutex
	checked bool
	sg      *stargzLayer
}

// stargz returns the eStargz view of the layer, or nil if the blob is not
// eStargz. It costs two small range reads the first time (footer, then TOC
// and footer together), none when persisted.
func (l *Layer) stargz(ctx context.Context) (*stargzLayer, error) {
	l.sgState.mu.Lock()
	defer l.sgState.mu.Unlock()
	if l.sgState.checked {
		return l.sgState.sg, nil
	}
	tocOff, tail, err := l.m.loadStargzTail(l.key)
	if err != nil {
		if idx := l.loadedIndex(); idx != nil && (idx.NotStargz || idx.Format != FormatGzip) {
			l.sgState.checked = true
			return nil, nil
		}
		f, err := l.Format(ctx)
		if err != nil {
			return nil, err
		}
		if f != FormatGzip {
			l.sgState.checked = true
			return nil, nil
		}
		tocOff, tail, err = l.readStargzTail(ctx)
		if errors.Is(err, errNotStargz) && l.lopts.TOCDigest == "" {
			l.sgState.checked = true
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: eStargz: %w", l.key, err)
		}
		l.m.saveStargzTail(l.key, tocOff, tail)
	}
	sg, err := l.openStargz(tocOff, tail)
	if err != nil {
		return nil, fmt.Errorf("layer %s: eStargz: %w", l.key, err)
	}
	l.sgState.checked, l.sgState.sg = true, sg
	return sg, nil
}

var errNotStargz = errors.New("no eStargz footer")

// readStargzTail reads the footer, then the TOC with the footer in one read.
func (l *Layer) readStargzTail(ctx context.Context) (int64, []byte, error) {
	size := l.blob.Size()
	n := min(size, estargz.FooterSize)
	footer := make([]byte, n)
	if _, err := l.blob.ReadAt(ctx, footer, size-n); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, fmt.Errorf("read footer: %w", err)
	}
	tocOff := int64(-1)
	for _, d := range []estargz.Decompressor{new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor)} {
		fs := d.FooterSize()
		if fs > n {
			continue
		}
		if _, off, _, err := d.ParseFooter(footer[n-fs:]); err == nil && off >= 0 && off < size {
			tocOff = off
			break
		}
	}
	if tocOff < 0 {
		return 0, nil, errNotStargz
	}
	if size-tocOff > 512<<20 {
		return 0, nil, fmt.Errorf("TOC of %d bytes: too large", size-tocOff)
	}
	tail := make([]byte, size-tocOff)
	if _, err := l.blob.ReadAt(ctx, tail, tocOff); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, fmt.Errorf("read TOC: %w", err)
	}
	return tocOff, tail, nil
}

// tailReaderAt serves the TOC and footer from memory; estargz.Open reads
// nothing else.
type tailReaderAt struct {
	tocOff int64
	tail   []byte
}

func (t tailReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < t.tocOff {
		return 0, fmt.Errorf("eStargz: unexpected read at %d before the TOC at %d", off, t.tocOff)
	}
	if off-t.tocOff >= int64(len(t.tail)) {
		return 0, io.EOF
	}
	n := copy(p, t.tail[off-t.tocOff:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (l *Layer) openStargz(tocOff int64, tail []byte) (*stargzLayer, error) {
	sr := io.NewSectionReader(tailReaderAt{tocOff: tocOff, tail: tail}, 0, l.blob.Size())
	r, err := estargz.Open(sr, estargz.WithTOCOffset(tocOff))
	if err != nil {
		return nil, fmt.Errorf("open TOC: %w", err)
	}
	var v estargz.TOCEntryVerifier
	if l.lopts.TOCDigest != "" {
		d, err := digest.Parse(l.lopts.TOCDigest)
		if err != nil {
			return nil, fmt.Errorf("TOC digest annotation %q: %w", l.lopts.TOCDigest, err)
		}
		v, err = r.VerifyTOC(d)
		if err != nil {
			return nil, fmt.Errorf("verify TOC: %w", err)
		}
	} else if v, err = r.Verifiers(); err != nil {
		return nil, fmt.Errorf("TOC chunk digests: %w", err)
	}
	x, err := stargzIndex(r, l.m.opts.MaxEntries)
	if err != nil {
		return nil, err
	}
	return &stargzLayer{l: l, r: r, verifier: v, index: x, tocOff: tocOff, tail: tail}, nil
}

// stargzIndex builds the Index from the TOC tree. estargz resolves a
// hardlink to its target's TOCEntry; a name that differs from its entry's
// name is such a link.
func stargzIndex(r *estargz.Reader, maxEntries int) (*Index, error) {
	b := newIndexBuilder(maxEntries)
	root, ok := r.Lookup("")
	if !ok {
		return nil, errors.New("TOC has no root")
	}
	var walk func(dir string, d *estargz.TOCEntry) error
	walk = func(dir string, d *estargz.TOCEntry) error {
		var err error
		d.ForeachChild(func(base string, te *estargz.TOCEntry) bool {
			name := path.Join(dir, base)
			e := &Entry{
				Name:     name,
				Mode:     te.Stat().Mode(),
				UID:      te.UID,
				GID:      te.GID,
				ModTime:  te.ModTime(),
				Linkname: te.LinkName,
				Devmajor: int64(te.DevMajor),
				Devminor: int64(te.DevMinor),
				Offset:   -1,
			}
			switch te.Type {
			case "dir":
				e.Type = tar.TypeDir
			case "reg":
				e.Type, e.Size = tar.TypeReg, te.Size
			case "symlink":
				e.Type = tar.TypeSymlink
			case "char":
				e.Type = tar.TypeChar
			case "block":
				e.Type = tar.TypeBlock
			case "fifo":
				e.Type = tar.TypeFifo
			default:
				err = fmt.Errorf("TOC entry %q: unknown type %q", name, te.Type)
				return false
			}
			if te.Type != "dir" && cleanName(te.Name) != name {
				e.Type, e.Linkname, e.Size, e.Mode = tar.TypeLink, cleanName(te.Name), 0, e.Mode&^fs.ModeType
			}
			for k, v := range te.Xattrs {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[k] = string(v)
			}
			if err = b.put(e); err != nil {
				return false
			}
			if te.Type == "dir" {
				err = walk(name, te)
			}
			return err == nil
		})
		return err
	}
	if err := walk("", root); err != nil {
		return nil, err
	}
	x := b.finish()
	x.root = &Entry{Type: tar.TypeDir, Mode: root.Stat().Mode(), UID: root.UID, GID: root.GID, ModTime: root.ModTime(), Offset: -1}
	return x, nil
}

// openFile reads a regular file chunk by chunk: each chunk's compressed
// range is fetched once, inflated, checked against its TOC digest, and kept
// in the Manager's small chunk cache.
func (sg *stargzLayer) openFile(e *Entry) (ReaderAt, error) {
	return &stargzFile{sg: sg, name: e.Name, size: e.Size}, nil
}

type stargzFile struct {
	sg   *stargzLayer
	name string
	size int64
}

func (f *stargzFile) Size() int64 { return f.size }

func (f *stargzFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", f.sg.l.key, off)
	}
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= f.size {
			return n, io.EOF
		}
		ce, ok := f.sg.r.ChunkEntryForOffset(f.name, o)
		if !ok {
			return n, fmt.Errorf("layer %s: %q: no chunk at offset %d", f.sg.l.key, f.name, o)
		}
		data, err := f.sg.chunk(ctx, ce)
		if err != nil {
			return n, err
		}
		in := o - ce.ChunkOffset
		if in < 0 || in >= int64(len(data)) {
			return n, fmt.Errorf("layer %s: %q: chunk at %d holds %d bytes, want offset %d", f.sg.l.key, f.name, ce.ChunkOffset, len(data), in)
		}
		n += copy(p[n:], data[in:])
	}
	return n, nil
}

type chunkKey struct {
	key        string
	off, inner int64
}

func (sg *stargzLayer) chunk(ctx context.Context, ce *estargz.TOCEntry) ([]byte, error) {
	k := chunkKey{sg.l.key, ce.Offset, ce.InnerOffset}
	if b, ok := sg.l.m.chunks.Get(k); ok {
		return b, nil
	}
	end := ce.NextOffset()
	if end <= ce.Offset || end > sg.tocOff {
		end = sg.tocOff
	}
	comp := make([]byte, end-ce.Offset)
	if _, err := sg.l.blob.ReadAt(ctx, comp, ce.Offset); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("layer %s: read chunk at %d: %w", sg.l.key, ce.Offset, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(comp))
	if err != nil {
		return nil, fmt.Errorf("layer %s: chunk at %d: %w", sg.l.key, ce.Offset, err)
	}
	zr.Multistream(false)
	if _, err := io.CopyN(io.Discard, zr, ce.InnerOffset); err != nil {
		return nil, fmt.Errorf("layer %s: chunk at %d: %w", sg.l.key, ce.Offset, err)
	}
	data := make([]byte, ce.ChunkSize)
	if _, err := io.ReadFull(zr, data); err != nil {
		return nil, fmt.Errorf("layer %s: chunk at %d: %w", sg.l.key, ce.Offset, err)
	}
	v, err := sg.verifier.Verifier(ce)
	if err != nil {
		return nil, fmt.Errorf("layer %s: chunk at %d: %w", sg.l.key, ce.Offset, err)
	}
	v.Write(data)
	if !v.Verified() {
		return nil, fmt.Errorf("layer %s: chunk at %d of %q: %w: digest does not match the TOC", sg.l.key, ce.Offset, ce.Name, errCorrupt)
	}
	sg.l.m.chunks.Add(k, data)
	return data, nil
}
