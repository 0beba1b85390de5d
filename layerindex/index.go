package layerindex

import (
	"hash/crc32"
	"io/fs"

	"github.com/regfs/regfs/blobio"

	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// ErrBadTar means the layer decompresses fine but is not a tar this package
// reads (its tar stream is still served by TarReadAt).
var ErrBadTar = errors.New("not a readable tar")

// layerIndex is everything one pass over a blob learns: the tar stream's
// size, restart points into it, and the tar entries.
type layerIndex struct {
	Format      Format
	TarSize     int64
	Checkpoints []checkpoint // gzip: sorted by UOff
	Frames      []zstdFrame  // zstd: sorted by UOff
	Tar         *Index       // nil if the stream is not a readable tar
	TarErr      string       // why Tar is nil
	tarErr      error        // the same, unwrappable, when built in this process
	NotStargz   bool         // the blob was checked and has no eStargz footer
	// charged is what the index holds of the Manager's memory budget:
	// taken as a pass builds it (or when loaded), given back when the
	// Manager's LRU drops it or the pass fails.
	charged atomic.Int64
}

// charge takes n bytes of the Manager's budget for idx.
func (l *Layer) charge(idx *layerIndex, n int64) error {
	if err := l.m.charge(n, "index layer "+l.key); err != nil {
		l.logBudgetOnce(err)
		return err
	}
	idx.charged.Add(n)
	return nil
}

// newIndexBuilder is a builder for l's index idx, bounded by the
// Manager's limits.
func (l *Layer) newIndexBuilder(idx *layerIndex) *indexBuilder {
	b := newIndexBuilder(l.m.opts.MaxEntries)
	b.charge = func(n int64) error { return l.charge(idx, n) }
	return b
}

// checkpoint is a place a gzip stream can be resumed: at the start of a
// deflate block inside a member, with the 32 KiB of output before it.
type checkpoint struct {
	UOff   int64  // offset in the uncompressed tar stream
	COff   int64  // blob offset of the byte the deflate block starts in
	Bit    uint8  // bits of that byte before the block (0-7)
	Window []byte // the output before UOff, up to 32 KiB
	// Check is the CRC-32 of the CheckLen (at most checkLen) bytes of output
	// at UOff as the index pass decoded them. A stream resumed here decodes
	// and compares them before it hands out a byte: a checkpoint recorded at
	// a wrong bit fails the read instead of serving wrong bytes.
	Check    uint32
	CheckLen uint32
}

// checkLen is how much output after a checkpoint its Check covers.
const checkLen = 4 << 10

// checkOutput feeds out, the pass's output at uncompressed offset at, to
// the Checks of cps[pending:], and returns the new pending: the first
// checkpoint whose Check still needs output (len(cps) at the stream's end).
func checkOutput(cps []checkpoint, pending int, at int64, out []byte, end bool) int {
	for i := pending; i < len(cps); i++ {
		cp := &cps[i]
		lo, hi := max(cp.UOff+int64(cp.CheckLen), at), min(cp.UOff+checkLen, at+int64(len(out)))
		if lo < hi {
			cp.Check = crc32.Update(cp.Check, crc32.IEEETable, out[lo-at:hi-at])
			cp.CheckLen += uint32(hi - lo)
		}
	}
	for pending < len(cps) && (end || cps[pending].CheckLen == checkLen) {
		pending++
	}
	return pending
}

// zstdFrame is where a zstd frame starts, stored and uncompressed.
type zstdFrame struct {
	COff, UOff int64
}

// checkpointFor returns the last of cps (sorted by UOff) at or before off,
// ok false if there is none (start from the beginning).
func checkpointFor(cps []checkpoint, off int64) (checkpoint, bool) {
	i := sort.Search(len(cps), func(i int) bool { return cps[i].UOff > off })
	if i == 0 {
		return checkpoint{}, false
	}
	return cps[i-1], true
}

// frameFor returns the last of frames (sorted by UOff) at or before off,
// or the blob's start.
func frameFor(frames []zstdFrame, off int64) zstdFrame {
	i := sort.Search(len(frames), func(i int) bool { return frames[i].UOff > off })
	if i == 0 {
		return zstdFrame{}
	}
	return frames[i-1]
}

// progressReader counts blob bytes fetched by a pass into the Layer's progress.
func (l *Layer) progressBlobReader(ctx context.Context, off int64) *blobReader {
	br := newBlobReader(ctx, l.blob, off, l.m.opts.ReadSize)
	br.onFill = func(n int64) { l.build.done.Add(n) }
	return br
}

// buildIndex makes one pass over the blob: decode it all (checking every
// gzip CRC), note restart points, and read the tar headers on the way. An
// uncompressed tar needs no decoding: only its headers are read.
func (l *Layer) buildIndex(ctx context.Context) (_ *layerIndex, err error) {
	f, err := l.Format(ctx)
	if err != nil {
		return nil, err
	}
	idx := &layerIndex{Format: f}
	defer func() {
		if err != nil {
			l.m.release(idx.charged.Swap(0))
		}
	}()
	if f == FormatGzip {
		// Settle eStargz now (one read of the blob's last bytes) so a
		// persisted index answers it later without any read.
		sg, err := l.stargz(ctx)
		if err != nil {
			return nil, err
		}
		idx.NotStargz = sg == nil
	}
	var src io.Reader
	switch f {
	case FormatTar:
		return l.buildTarIndex(ctx, idx)
	case FormatGzip:
		gz := newGzipStream(l.progressBlobReader(ctx, 0))
		share := l.share.start()
		defer func() { l.share.finish(share, err == nil) }()
		spacing, last := l.m.opts.Spacing, int64(0)
		var budgetErr error
		gz.onCheckpoint = func(cp flate.InflateCheckpoint) {
			if u := cp.UncompressedOffset; u-last >= spacing && budgetErr == nil {
				c := checkpoint{UOff: u, COff: cp.CompressedOffset, Bit: cp.BitOffset, Window: append([]byte(nil), cp.Window...)}
				if budgetErr = l.charge(idx, checkpointCost(&c)); budgetErr == nil {
					idx.Checkpoints = append(idx.Checkpoints, c)
				}
				last = u
			}
		}
		// A checkpoint is shared with readers once its Check is complete;
		// from then on it is never written again.
		pending, decoded := 0, int64(0)
		checked := readerFunc(func(p []byte) (int, error) {
			if budgetErr != nil {
				return 0, budgetErr
			}
			n, err := gz.read(p)
			if was := pending; len(idx.Checkpoints) > pending {
				pending = checkOutput(idx.Checkpoints, pending, decoded, p[:n], err != nil)
				if pending > was {
					share.checkpointed(idx.Checkpoints[:pending])
				}
			}
			decoded += int64(n)
			return n, err
		})
		// Every byte of the stream goes through the tee: TarReaders open
		// meanwhile read it from there rather than inflating it again.
		src = &teeShare{ctx: ctx, r: checked, ps: &l.share, s: share}
	case FormatZstd:
		zs, err := newZstdFrameStream(l.progressBlobReader(ctx, 0))
		if err != nil {
			return nil, err
		}
		defer zs.close()
		var budgetErr error
		zs.onFrame = func(fr zstdFrame) {
			if budgetErr == nil {
				if budgetErr = l.charge(idx, frameCost); budgetErr == nil {
					idx.Frames = append(idx.Frames, fr)
				}
			}
		}
		src = readerFunc(func(p []byte) (int, error) {
			if budgetErr != nil {
				return 0, budgetErr
			}
			return zs.Read(p)
		})
		if l.m.spans != nil {
			src = &spanTee{r: src, l: l, idx: idx, limit: l.m.opts.SpanCacheBytes / 2}
		}
	default:
		return nil, fmt.Errorf("unknown format %v", f)
	}
	cr := &countingReader{r: src}
	tarIdx, tarErr := readTarIndex(cr, l.newIndexBuilder(idx))
	if cr.err != nil {
		return nil, cr.err // the blob, not the tar, is broken
	}
	if errors.Is(tarErr, ErrIndexMemory) {
		return nil, tarErr // not the tar's fault: never saved as its state
	}
	// The rest (end-of-archive padding, or all of a non-tar) counts too.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, err
	}
	if cr.err != nil {
		return nil, cr.err
	}
	idx.TarSize = cr.n
	idx.Tar = tarIdx
	if tarErr != nil {
		idx.TarErr, idx.tarErr = tarErr.Error(), tarErr
	}
	return idx, nil
}

// Index returns the layer's tar entries. For an eStargz or zstd:chunked
// blob it reads only the footer and TOC; otherwise it waits for the index pass (once per blob
// key, shared). A blob that is not a readable tar gives an error here while
// its tar stream stays readable.
func (l *Layer) Index(ctx context.Context) (*Index, error) {
	if sg, err := l.stargz(ctx); err != nil {
		return nil, err
	} else if sg != nil {
		return sg.index, nil
	}
	if zc, err := l.zstdChunked(ctx); err != nil {
		return nil, err
	} else if zc != nil {
		return zc.index, nil
	}
	if l.loadedIndex(ctx) == nil {
		if p := l.published(ctx); p != nil {
			return p.idx.Tar, nil
		}
	}
	idx, err := l.index(ctx)
	if err != nil {
		return nil, err
	}
	if idx.Tar == nil {
		cause := idx.tarErr
		if cause == nil {
			cause = errors.New(idx.TarErr)
		}
		return nil, fmt.Errorf("layer %s: %w: %w", l.key, ErrBadTar, cause)
	}
	return idx.Tar, nil
}

// OpenFile returns a reader of a regular file's content (a hardlink is
// followed to its target). e must come from this Layer's Index (after a
// published index was dropped, the entry of the same name is read).
func (l *Layer) OpenFile(ctx context.Context, e *Entry) (blobio.ReaderAt, error) {
	x, err := l.Index(ctx)
	if err != nil {
		return nil, err
	}
	if p := l.pub.inUse(); p != nil && x == p.idx.Tar {
		return p.openFile(ctx, e)
	}
	if l.PublishedDropped() {
		cur, ok := x.Lookup(e.Name)
		if !ok {
			return nil, fmt.Errorf("layer %s: open %q: %w", l.key, e.Name, fs.ErrNotExist)
		}
		if cur != e && (cur.Type != e.Type || cur.Size != e.Size || cur.Mode != e.Mode || cur.Linkname != e.Linkname) {
			// What the caller showed of e (its size above all) came from
			// the index that lied: serving the real file under it would
			// cut or pad it.
			return nil, fmt.Errorf("layer %s: open %q: the entry differs from the dropped published index's: %w", l.key, e.Name, ErrPublishedMismatch)
		}
		e = cur
	}
	t, err := x.Resolve(e)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.key, err)
	}
	if t.Type != '0' {
		return nil, fmt.Errorf("layer %s: open %q: not a regular file (type %q)", l.key, e.Name, t.Type)
	}
	if sg, _ := l.stargz(ctx); sg != nil {
		return sg.openFile(t)
	}
	if zc, _ := l.zstdChunked(ctx); zc != nil {
		if r := zc.openFile(t); r != nil {
			return r, nil
		}
		return l.openLargeZstdFile(ctx, t)
	}
	if t.Offset < 0 {
		return nil, fmt.Errorf("layer %s: open %q: %w", l.key, e.Name, errNotAddressable)
	}
	idx := l.loadedIndex(ctx)
	return &fileReader{l: l, idx: idx, off: t.Offset, size: t.Size}, nil
}

// fileReader is a file's bytes inside the tar stream.
type fileReader struct {
	l         *Layer
	idx       *layerIndex // keeps the checkpoints alive while the file is open
	off, size int64
}

func (r *fileReader) Size() int64 { return r.size }

// ReadAt fills p unless the file ends first (then io.EOF with the rest).
func (r *fileReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", r.l.key, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if rest := r.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n, err := r.l.tarReadAt(ctx, want, r.off+off, r.idx)
	if err == nil && n < len(want) {
		err = fmt.Errorf("layer %s: tar stream ended inside a file: %w", r.l.key, io.ErrUnexpectedEOF)
	}
	if errors.Is(err, io.EOF) && n == len(want) {
		err = nil
	}
	if err == nil && len(want) < len(p) {
		err = io.EOF
	}
	return n, err
}
