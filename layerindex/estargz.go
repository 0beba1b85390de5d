package layerindex

import (
	"sync/atomic"

	"github.com/regfs/regfs/blobio"

	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

// stargzLayer is an eStargz blob opened through its TOC.
//
// The TOC JSON is read here rather than by estargz.Open: its reader refuses
// a hardlink whose target is not in the same layer, which a layer tar may
// hold (the target is in a layer below). Every chunk is still checked
// against its TOC digest, and the TOC against the annotation when given.
type stargzLayer struct {
	src      blobSource // the blob the chunks are read from
	store    *chunkStore
	index    *Index
	chunks   map[string][]tocChunk // regular file → its chunks, by FileOff
	tocEntry *Entry                // stargz.index.json itself, the tar's last entry
	tocOff   int64
	tail     []byte // the blob from tocOff to its end: TOC and footer
}

// stargzState remembers whether a layer is eStargz, once known.
type stargzState struct {
	sg     retryOnce[*stargzLayer] // nil once known: not eStargz
	opened atomic.Bool             // the TOC is read: the layer's index needs no pass
}

// stargz returns the eStargz view of the layer, or nil if the blob is not
// eStargz. It costs two small range reads the first time (footer, then TOC
// and footer together), none when persisted. A failure is not kept: the
// next call checks again.
func (l *Layer) stargz(ctx context.Context) (*stargzLayer, error) {
	return l.sgState.sg.get(ctx, l.checkStargz)
}

func (l *Layer) checkStargz(ctx context.Context) (*stargzLayer, error) {
	tocOff, tail, err := l.m.loadStargzTail(ctx, l.storeKey())
	if err != nil {
		if idx := l.loadedIndex(ctx); idx != nil && (idx.NotStargz || idx.Format != FormatGzip) {
			return nil, nil
		}
		f, err := l.Format(ctx)
		if err != nil {
			return nil, err
		}
		if f != FormatGzip {
			return nil, nil
		}
		tocOff, tail, err = l.readStargzTail(ctx)
		if errors.Is(err, errNotStargz) && l.lopts.TOCDigest == "" {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: eStargz: %w", l.key, err)
		}
		if err := l.m.saveStargzTail(ctx, l.storeKey(), tocOff, tail); err != nil {
			l.m.opts.Logger.WithError(err).WithField("layer", l.key).Warn("eStargz TOC not saved: it is read again on next use")
		}
	}
	sg, err := l.openStargz(tocOff, tail)
	if err != nil {
		return nil, fmt.Errorf("layer %s: eStargz: %w", l.key, err)
	}
	// The layer keeps its TOC index for good: charged, never given back.
	if err := l.m.charge(tarIndexCost(sg.index)+int64(len(tail)), "eStargz TOC of layer "+l.key); err != nil {
		l.logBudgetOnce(err)
		return nil, err
	}
	l.sgState.opened.Store(true)
	return sg, nil
}

var errNotStargz = errors.New("no eStargz footer")

// readStargzTail reads the footer, then the TOC with the footer in one read.
func (l *Layer) readStargzTail(ctx context.Context) (int64, []byte, error) {
	size := l.blob.Size()
	n := min(size, estargz.FooterSize)
	footer := make([]byte, n)
	if _, err := l.blob.ReadExact(ctx, footer, size-n); err != nil && !errors.Is(err, io.EOF) {
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
	if _, err := l.blob.ReadExact(ctx, tail, tocOff); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, fmt.Errorf("read TOC: %w", err)
	}
	return tocOff, tail, nil
}

// maxTOCJSON bounds the uncompressed TOC JSON of one layer.
const maxTOCJSON = 1 << 30

// parseStargzTOC reads the TOC from the blob's tail: the first gzip member
// holds a tar whose one entry, stargz.index.json, is the TOC JSON. It
// returns that tar header too (the entry is part of the layer's tar) and
// the JSON's digest.
func parseStargzTOC(tail []byte) (*tar.Header, *estargz.JTOC, digest.Digest, error) {
	zr, err := newGzipMember(tail)
	if err != nil {
		return nil, nil, "", fmt.Errorf("TOC gzip header: %w", err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, nil, "", fmt.Errorf("TOC tar header: %w", err)
	}
	if hdr.Name != estargz.TOCTarName {
		return nil, nil, "", fmt.Errorf("TOC tar entry is %q, want %q", hdr.Name, estargz.TOCTarName)
	}
	if hdr.Size > maxTOCJSON {
		return nil, nil, "", fmt.Errorf("TOC JSON of %d bytes: more than %d", hdr.Size, maxTOCJSON)
	}
	d := digest.Canonical.Digester()
	toc := new(estargz.JTOC)
	if err := json.NewDecoder(io.TeeReader(tr, d.Hash())).Decode(toc); err != nil {
		return nil, nil, "", fmt.Errorf("TOC JSON: %w", err)
	}
	// The digest covers the whole entry, trailing whitespace included.
	if _, err := io.Copy(d.Hash(), tr); err != nil {
		return nil, nil, "", fmt.Errorf("TOC JSON: %w", err)
	}
	return hdr, toc, d.Digest(), nil
}

func (l *Layer) openStargz(tocOff int64, tail []byte) (*stargzLayer, error) {
	hdr, toc, tocDigest, err := parseStargzTOC(tail)
	if err != nil {
		return nil, err
	}
	if l.lopts.TOCDigest != "" {
		want, err := digest.Parse(l.lopts.TOCDigest)
		if err != nil {
			return nil, fmt.Errorf("TOC digest annotation %q: %w", l.lopts.TOCDigest, err)
		}
		if tocDigest != want {
			return nil, fmt.Errorf("verify TOC: %w: TOC JSON is %s, the annotation says %s", errCorrupt, tocDigest, want)
		}
	}
	sg := &stargzLayer{src: l.source(), tocOff: tocOff, tail: tail}
	sg.store = &chunkStore{src: sg.src, cache: l.m.chunks, decode: decodeGzipChunk}
	if err := sg.buildIndex(toc, hdr, l.m.opts.MaxEntries); err != nil {
		return nil, err
	}
	return sg, nil
}

// buildIndex turns the TOC entries, in tar order, into the Index by the
// same rules as a tar (a later entry replaces an earlier one), and notes
// every regular file's chunks with their digests. A hardlink is kept as
// the TOC lists it, whether or not its target is in this layer.
func (sg *stargzLayer) buildIndex(toc *estargz.JTOC, tocHdr *tar.Header, maxEntries int) error {
	ents := toc.Entries
	// Where each data entry's gzip member ends: at the next member's start
	// (an entry with an Offset and no InnerOffset starts one), or the TOC.
	ends := make([]int64, len(ents))
	next := sg.tocOff
	for i := len(ents) - 1; i >= 0; i-- {
		te := ents[i]
		ends[i] = next
		if te.Offset != 0 && te.InnerOffset == 0 {
			next = te.Offset
		}
	}
	b := newIndexBuilder(maxEntries)
	sg.chunks = map[string][]tocChunk{}
	owner := map[string]*Entry{}        // name → the regular file its chunks are
	replaced := map[*Entry][]tocChunk{} // the chunks of regular files replaced since
	var file *estargz.TOCEntry          // the regular file the next "chunk" entries belong to
	var fileName string
	addChunk := func(te *estargz.TOCEntry, i int, size int64) error {
		if size <= 0 {
			return nil
		}
		if te.Offset <= 0 || te.Offset >= sg.tocOff || ends[i] <= te.Offset || te.InnerOffset < 0 || te.ChunkOffset < 0 {
			return fmt.Errorf("TOC entry %q: chunk at %d of the blob (ends %d, TOC at %d) is out of range", fileName, te.Offset, ends[i], sg.tocOff)
		}
		ds := te.ChunkDigest
		if ds == "" && te.ChunkOffset == 0 && size == file.Size {
			ds = te.Digest // a file in one chunk: its own digest is the chunk's
		}
		if ds == "" {
			return fmt.Errorf("TOC entry %q: no digest for the chunk at file offset %d", fileName, te.ChunkOffset)
		}
		d, err := digest.Parse(ds)
		if err != nil {
			return fmt.Errorf("TOC entry %q: chunk digest: %w", fileName, err)
		}
		sg.chunks[fileName] = append(sg.chunks[fileName], tocChunk{
			Offset: te.Offset, End: ends[i], Inner: te.InnerOffset, FileOff: te.ChunkOffset, Size: size, Digest: d,
		})
		return nil
	}
	for i, te := range ents {
		if te.Type == "chunk" {
			if file == nil {
				return fmt.Errorf("TOC entry %d: a chunk with no regular file before it", i)
			}
			size := te.ChunkSize
			if size == 0 {
				size = file.Size - te.ChunkOffset // the last chunk runs to the end
			}
			if err := addChunk(te, i, size); err != nil {
				return err
			}
			continue
		}
		e, err := stargzEntry(te)
		if err != nil {
			return err
		}
		file, fileName = nil, e.Name
		if te.Type == "reg" {
			file = te
			if prev := owner[e.Name]; prev != nil {
				replaced[prev] = sg.chunks[e.Name] // a hardlink to prev may keep them (movedData)
			}
			owner[e.Name] = e
			delete(sg.chunks, e.Name) // a later entry for a path replaces the earlier one
			size := te.ChunkSize
			if size == 0 || size > te.Size {
				size = te.Size
			}
			if err := addChunk(te, i, size); err != nil {
				return err
			}
		}
		if err := b.addEntry(e); err != nil {
			return fmt.Errorf("TOC entry %q: %w", te.Name, err)
		}
	}
	// The TOC's own tar entry ends the layer's tar: shown like any file.
	if _, err := b.add(tocHdr, -1); err != nil {
		return fmt.Errorf("TOC entry %q: %w", tocHdr.Name, err)
	}
	sg.tocEntry = b.x.byName[cleanName(tocHdr.Name)]
	sg.index = b.finish()
	for _, mv := range b.moved {
		cs, ok := replaced[mv.from]
		if !ok && owner[mv.from.Name] == mv.from {
			cs = sg.chunks[mv.from.Name] // no regular file took its name since
		}
		sg.chunks[mv.to.Name] = cs
	}
	for name, cs := range sg.chunks {
		sort.Slice(cs, func(i, j int) bool { return cs[i].FileOff < cs[j].FileOff })
		sg.chunks[name] = cs
	}
	return nil
}

// stargzEntry is the Entry for a TOC entry other than "chunk", with its
// fields read as the tar header they came from.
func stargzEntry(te *estargz.TOCEntry) (*Entry, error) {
	h := tar.Header{Mode: te.Mode}
	switch te.Type {
	case "dir":
		h.Typeflag = tar.TypeDir
	case "reg":
		h.Typeflag = tar.TypeReg
	case "symlink":
		h.Typeflag = tar.TypeSymlink
	case "hardlink":
		h.Typeflag = tar.TypeLink
	case "char":
		h.Typeflag = tar.TypeChar
	case "block":
		h.Typeflag = tar.TypeBlock
	case "fifo":
		h.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("TOC entry %q: unknown type %q", te.Name, te.Type)
	}
	e := &Entry{
		Name:     cleanName(te.Name),
		Type:     h.Typeflag,
		Mode:     h.FileInfo().Mode(),
		UID:      te.UID,
		GID:      te.GID,
		Linkname: te.LinkName,
		Devmajor: int64(te.DevMajor),
		Devminor: int64(te.DevMinor),
		Offset:   -1,
		ModTime:  time.Unix(0, 0), // the TOC leaves out a zero mtime, which a tar header holds as 0
	}
	if te.ModTime3339 != "" {
		t, err := time.Parse(time.RFC3339, te.ModTime3339)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %q: modtime: %w", te.Name, err)
		}
		e.ModTime = t
	}
	switch te.Type {
	case "reg":
		if te.Size < 0 {
			return nil, fmt.Errorf("TOC entry %q: size %d", te.Name, te.Size)
		}
		e.Size = te.Size
	case "hardlink":
		e.Linkname = cleanName(te.LinkName)
	}
	for k, v := range te.Xattrs {
		if e.Xattrs == nil {
			e.Xattrs = map[string]string{}
		}
		e.Xattrs[k] = string(v)
	}
	return e, nil
}

// openFile reads a regular file chunk by chunk, each checked against its
// TOC digest.
func (sg *stargzLayer) openFile(e *Entry) (blobio.ReaderAt, error) {
	if e == sg.tocEntry {
		return &stargzTOCFile{sg: sg, size: e.Size}, nil
	}
	return sg.store.openFile(e.Name, e.Size, sg.chunks[e.Name]), nil
}

// decodeGzipChunk inflates chunk c from comp, its gzip member's bytes.
func decodeGzipChunk(comp []byte, c tocChunk) ([]byte, error) {
	zr, err := newGzipMember(comp)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, zr, c.Inner); err != nil {
		return nil, err
	}
	data := make([]byte, c.Size)
	if _, err := io.ReadFull(zr, data); err != nil {
		return nil, err
	}
	return data, nil
}

// stargzTOCFile is stargz.index.json, decoded from the TOC the layer
// already holds in memory.
type stargzTOCFile struct {
	sg   *stargzLayer
	size int64

	once sync.Once
	data []byte
	err  error
}

func (f *stargzTOCFile) Size() int64 { return f.size }

func (f *stargzTOCFile) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	f.once.Do(func() {
		zr, err := newGzipMember(f.sg.tail)
		if err != nil {
			f.err = err
			return
		}
		tr := tar.NewReader(zr)
		if _, f.err = tr.Next(); f.err == nil {
			f.data, f.err = io.ReadAll(io.LimitReader(tr, f.size))
		}
		if f.err == nil && int64(len(f.data)) != f.size {
			f.err = io.ErrUnexpectedEOF
		}
	})
	if f.err != nil {
		return 0, fmt.Errorf("layer %s: %s: %w", f.sg.src.key, estargz.TOCTarName, f.err)
	}
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", f.sg.src.key, off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
