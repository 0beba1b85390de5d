package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/session"
)

// bytesFile is a small immutable file held in memory (manifests, configs,
// JSON, digests).
type bytesFile struct {
	gofs.Inode
	noXattrs
	data  []byte
	mtime time.Time
}

var (
	_ = (node)((*bytesFile)(nil))
	_ = (gofs.NodeOpener)((*bytesFile)(nil))
	_ = (gofs.NodeReader)((*bytesFile)(nil))
	_ = (gofs.NodeGetattrer)((*bytesFile)(nil))
)

func (f *bytesFile) fill(_ context.Context, a *fuse.Attr) error {
	fileAttr(a, int64(len(f.data)), f.mtime)
	return nil
}

func (f *bytesFile) attrTTL() time.Duration { return immutableTTL }

func (f *bytesFile) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fill(nil, &out.Attr)
	out.SetTimeout(immutableTTL)
	return 0
}

func (f *bytesFile) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *bytesFile) Read(_ context.Context, _ gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(f.data)))
	return fuse.ReadResultData(f.data[off:end]), 0
}

// layerRef is what the tree keeps about one layer besides the session's
// handle on it, so it outlives the kernel forgetting the layer's nodes: the
// layer's own tree (layers/<id>/fs/) and layer.tar's size once known.
type layerRef struct {
	t *tree
	l *session.Layer

	mu  sync.Mutex
	fs  *layerView   // the layer's own tree, made on first use
	tar atomic.Int64 // layer.tar size + 1; 0 while unknown
}

// view is the layer's own tree (layers/<id>/fs/).
func (r *layerRef) view() *layerView {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fs == nil {
		r.fs = &layerView{ref: r}
	}
	return r.fs
}

// knownTarSize is layer.tar's size if something found it already.
func (r *layerRef) knownTarSize() (int64, bool) {
	v := r.tar.Load()
	return v - 1, v > 0
}

// cheapTarSize is layer.tar's size if it is known without I/O: found
// before, or in the layer's loaded index.
func (r *layerRef) cheapTarSize(ctx context.Context) (int64, bool) {
	if size, ok := r.knownTarSize(); ok {
		return size, true
	}
	if ix := r.l.OpenedIndex(); ix != nil && ix.Progress().State == layerindex.IndexReady {
		if s, err := ix.TarSize(ctx); err == nil {
			r.tar.Store(s + 1)
			return s, true
		}
	}
	return 0, false
}

// tarSize is layer.tar's size. Known without decoding for an uncompressed
// blob (its size) and a loaded or persisted index; otherwise it starts the
// layer's index pass and waits for it until ctx ends (the operation's
// --timeout; the pass itself goes on). layer.tar must never be shown
// complete and empty: copy tools read exactly the size a stat gives.
func (r *layerRef) tarSize(ctx context.Context) (int64, error) {
	if size, ok := r.knownTarSize(); ok {
		return size, nil
	}
	ix, err := r.l.Index(ctx)
	if err != nil {
		return 0, fmt.Errorf("size of layer.tar: %w", err)
	}
	size, err := ix.TarSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("size of layer.tar (waiting for the layer's index pass): %w", err)
	}
	r.tar.Store(size + 1)
	return size, nil
}

// readFull serves one READ of [off, off+len(dest)) of a size-byte stream,
// short only at its end.
func readFull(ctx context.Context, readAt func(context.Context, []byte, int64) (int, error), dest []byte, off, size int64) ([]byte, error) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if size >= 0 {
		if off >= size {
			return nil, nil
		}
		dest = dest[:min(int64(len(dest)), size-off)]
	}
	n, err := readAt(ctx, dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && (size < 0 || n == len(dest))) {
		return nil, err
	}
	return dest[:n], nil
}

// blobFile is a layer's stored bytes; reads are ranged through the cache.
type blobFile struct {
	gofs.Inode
	noXattrs
	ref   *layerRef
	mtime time.Time
}

var (
	_ = (node)((*blobFile)(nil))
	_ = (gofs.NodeOpener)((*blobFile)(nil))
	_ = (gofs.NodeGetattrer)((*blobFile)(nil))
)

func (f *blobFile) fill(ctx context.Context, a *fuse.Attr) error {
	size, err := f.ref.l.Size(ctx)
	if err != nil {
		return err
	}
	fileAttr(a, size, f.mtime)
	return nil
}

func (f *blobFile) attrTTL() time.Duration { return immutableTTL }

func (f *blobFile) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return f.ref.t.getattr(ctx, f, out)
}

func (f *blobFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	t := f.ref.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	h := &blobHandle{f: f}
	var err error
	if h.cached, h.direct, err = f.ref.openStored(ctx); err != nil {
		return nil, 0, t.errno("open", &f.Inode, err)
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// openStored opens a reader of the layer's stored bytes for one consumer:
// through the cache (a reader of its own, to close when done), or the
// blob itself (direct) when the tree has no cache.
func (r *layerRef) openStored(ctx context.Context) (cached *layercache.Reader, direct blobio.Source, err error) {
	if r.t.s.Cache() != nil {
		cached, err = r.l.Reader(ctx, layercache.OpenOptions{})
	} else {
		direct, err = r.l.Blob(ctx)
	}
	return cached, direct, err
}

// blobHandle is one open blob file: a cache reader of its own (its own
// readahead state), or the blob itself when the tree has no cache.
type blobHandle struct {
	f      *blobFile
	cached *layercache.Reader // nil without a cache
	direct blobio.Source      // read when cached is nil
}

var (
	_ = (gofs.FileReader)((*blobHandle)(nil))
	_ = (gofs.FileReleaser)((*blobHandle)(nil))
)

// sliceResult is a READ reply straight from the cache's blocks: go-fuse
// writes them with writev(2) (it uses the Slices method) and then calls
// Done, which gives the blocks back to the cache (some are recycled
// buffers, which must not be reused before the reply is written).
type sliceResult struct {
	vec     [][]byte
	release func()
}

var _ fuse.ReadResult = (*sliceResult)(nil)

func (r *sliceResult) Size() int {
	n := 0
	for _, v := range r.vec {
		n += len(v)
	}
	return n
}

func (r *sliceResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, v := range r.vec {
		buf = append(buf, v...)
	}
	return buf, fuse.OK
}

func (r *sliceResult) Slices() ([][]byte, fuse.Status) { return r.vec, fuse.OK }

func (r *sliceResult) Done() { r.release() }

func (h *blobHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	t := h.f.ref.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	if h.cached == nil {
		b, err := readFull(ctx, h.direct.ReadAt, dest, off, h.direct.Size())
		if err != nil {
			return nil, t.errno("read", &h.f.Inode, fmt.Errorf("blob at %d: %w", off, err))
		}
		return fuse.ReadResultData(b), 0
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	// The cache's blocks go to writev(2) as they are: one copy less per
	// byte than reading into dest.
	size := h.cached.Size()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	vec, release, err := h.cached.Slices(ctx, off, int(min(int64(len(dest)), size-off)))
	if err != nil && !errors.Is(err, io.EOF) {
		release()
		return nil, t.errno("read", &h.f.Inode, fmt.Errorf("blob at %d: %w", off, err))
	}
	return &sliceResult{vec: vec, release: release}, 0
}

func (h *blobHandle) Release(context.Context) syscall.Errno {
	if h.cached != nil {
		h.cached.Close()
	}
	return 0
}

// tarFile is a layer's uncompressed tar stream, from layerindex. Every
// stat gets its real size (layerRef.tarSize), waiting for the layer's
// index pass when that is the only way to know it. A lookup does not wait:
// while the size is unknown its attributes have a 0 timeout, so the
// kernel sends a GETATTR for any stat. Nor does the fstat of the process
// streaming an open layer.tar (cat): it reads to the end whatever size it
// is told, and waiting would hold its first byte until the whole pass ends.
type tarFile struct {
	gofs.Inode
	noXattrs
	ref   *layerRef
	mtime time.Time
}

var (
	_ = (node)((*tarFile)(nil))
	_ = (gofs.NodeOpener)((*tarFile)(nil))
	_ = (gofs.NodeGetattrer)((*tarFile)(nil))
)

// unknownTTL makes the kernel ask again at every stat and at every read
// past the size it knows. It must be 0: any positive timeout is rounded up
// to a jiffy, long enough for an open-stat-read to see the old size 0.
// (The mount sets no default attribute timeout, so 0 stays 0.)
const unknownTTL = 0

// fill gives the size if known without waiting, else 0 with a 0 attribute
// timeout (attrTTL): for lookups, whose attributes no stat is answered from.
func (f *tarFile) fill(ctx context.Context, a *fuse.Attr) error {
	size, _ := f.ref.cheapTarSize(ctx)
	fileAttr(a, size, f.mtime)
	return nil
}

func (f *tarFile) attrTTL() time.Duration {
	if _, ok := f.ref.knownTarSize(); ok {
		return immutableTTL
	}
	return unknownTTL
}

func (f *tarFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	// go-fuse passes one of the node's open handles when the kernel names
	// none (it never does for fstat); only the streaming handle's own
	// process is spared the wait.
	if h, ok := fh.(*tarHandle); ok && h.size < 0 && h.pid != 0 && h.pid == callerPid(ctx) {
		f.fill(ctx, &out.Attr)
		out.SetTimeout(f.attrTTL())
		return 0
	}
	t := f.ref.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	size, err := f.ref.tarSize(ctx)
	if err != nil {
		return t.errno("getattr", &f.Inode, err)
	}
	fileAttr(&out.Attr, size, f.mtime)
	out.SetTimeout(f.attrTTL())
	return 0
}

// callerPid is the pid of the process whose request ctx serves; 0 if unknown.
func callerPid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// Open finds the tar size (waiting briefly for the index pass) so the
// kernel can cache the file; a layer whose pass takes longer is served in
// direct-I/O mode right away, streaming until the end, while the pass goes on.
func (f *tarFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	t := f.ref.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	ix, err := f.ref.l.Index(ctx)
	if err != nil {
		return nil, 0, t.errno("open", &f.Inode, err)
	}
	h := &tarHandle{f: f, r: ix.NewTarReader(), size: -1, pid: callerPid(ctx)}
	if size, ok := f.ref.knownTarSize(); ok {
		h.size = size
		return h, fuse.FOPEN_KEEP_CACHE, 0
	}
	wctx, wcancel := context.WithTimeout(ctx, sizeWait)
	defer wcancel()
	// Stops waiting early when the pass holds its output back for h's
	// first read: streaming along with it beats waiting for its end and
	// decoding the layer again.
	size, known, err := ix.TarSizeOrStream(wctx)
	switch {
	case err == nil && known:
		f.ref.tar.Store(size + 1)
		h.size = size
		return h, fuse.FOPEN_KEEP_CACHE, 0
	case err == nil || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	h.r.Close()
	return nil, 0, t.errno("open", &f.Inode, err)
}

// tarHandle is one open layer.tar with its own decoding cursor, so a
// sequential reader streams whatever else reads the layer.
type tarHandle struct {
	f    *tarFile
	r    *layerindex.TarReader
	size int64  // -1 in direct-I/O mode: read until the stream ends
	pid  uint32 // the process that opened it
}

var (
	_ = (gofs.FileReader)((*tarHandle)(nil))
	_ = (gofs.FileReleaser)((*tarHandle)(nil))
)

func (h *tarHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	t := h.f.ref.t
	ctx, cancel := t.opCtx(ctx)
	defer cancel()
	b, err := readFull(ctx, h.r.ReadAt, dest, off, h.size)
	if err != nil {
		return nil, t.errno("read", &h.f.Inode, fmt.Errorf("layer.tar at %d: %w", off, err))
	}
	return fuse.ReadResultData(b), 0
}

func (h *tarHandle) Release(context.Context) syscall.Errno {
	h.r.Close()
	return 0
}
