package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

// v1Blob is one v1 layer, GET /v1/images/<id>/layer on the repository's
// endpoints.
type v1Blob struct {
	c         *v1Client
	repo, id  string
	key       string
	size      int64
	noRanges  atomic.Bool // the endpoint did not advertise Accept-Ranges: bytes, or ignored a Range
	requested atomic.Int64
}

var _ Blob = (*v1Blob)(nil)

func (b *v1Blob) Key() string  { return b.key }
func (b *v1Blob) Size() int64  { return b.size }
func (b *v1Blob) what() string { return fmt.Sprintf("v1 layer %s in %s/%s", b.id, b.c.host, b.repo) }

// ReadAt reads len(p) bytes at off, as io.ReaderAt does.
func (b *v1Blob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", b.what(), off)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), b.size-off)
	rc, err := b.Open(ctx, off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadFull(rc, p[:n])
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return got, fmt.Errorf("%s: read [%d,%d): %w", b.what(), off, off+n, err)
	}
	if n < int64(len(p)) {
		return got, io.EOF
	}
	return got, nil
}

// Open streams bytes [off, off+n) (n < 0: to the end), resuming dropped
// connections from the next byte. The first request is made before Open
// returns, so a missing layer or a refused token shows here.
func (b *v1Blob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if n < 0 {
		n = b.size - off
	}
	if off < 0 || off > b.size || n > b.size-off {
		return nil, fmt.Errorf("%s: open [%d,%d) outside the layer's %d bytes", b.what(), off, off+n, b.size)
	}
	r := &v1Reader{ctx: ctx, b: b, pos: off, end: off + n}
	if n > 0 {
		if err := r.connect(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// probeSize learns the size of a layer whose JSON gave no X-Docker-Size,
// from the Content-Range (or Content-Length) of a one-byte request.
func (b *v1Blob) probeSize(ctx context.Context) (int64, error) {
	resp, err := b.c.endpointGet(ctx, b.repo, b.what()+" size", "images/"+b.id+"/layer", func(r *http.Request) {
		r.Header.Set("Range", "bytes=0-0")
		r.Header.Set("Accept-Encoding", "identity")
	})
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, _, total, err := v1ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return -1, fmt.Errorf("%s: size unknown: Content-Range %q", b.what(), resp.Header.Get("Content-Range"))
		}
		return total, nil
	case http.StatusOK:
		if resp.ContentLength < 0 {
			return -1, fmt.Errorf("%s: size unknown: no X-Docker-Size and no Content-Length", b.what())
		}
		return resp.ContentLength, nil
	case http.StatusRequestedRangeNotSatisfiable:
		// Only an empty layer has no byte 0.
		return 0, nil
	}
	return -1, v1StatusErr(b.what(), resp)
}

// v1ParseContentRange reads "bytes first-last/total" (total "*" → -1).
func v1ParseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", h)
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, z, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(z, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, bad
		}
	}
	return first, last, total, nil
}

// v1Reader streams [pos, end) of a v1 layer, reconnecting with a Range from
// pos when a body ends early or breaks. When the endpoint does not honour
// ranges it reads the whole layer again and skips to pos: slower, never a
// byte from the wrong offset.
type v1Reader struct {
	ctx      context.Context
	b        *v1Blob
	pos, end int64
	body     io.ReadCloser
	failures int
	closed   bool
}

func (r *v1Reader) connect() error {
	b := r.b
	ranged := !b.noRanges.Load() && (r.pos > 0 || r.end < b.size)
	b.requested.Add(1)
	resp, err := b.c.endpointGet(r.ctx, b.repo, b.what(), "images/"+b.id+"/layer", func(q *http.Request) {
		// Identity: Go's transport would otherwise ask for gzip and
		// decompress a gzip-encoded answer, changing the bytes.
		q.Header.Set("Accept-Encoding", "identity")
		if ranged {
			q.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.pos, r.end-1))
		}
	})
	if err != nil {
		return err
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" {
		b.noRanges.Store(true)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if !ranged {
			v1Drain(resp)
			return fmt.Errorf("%s: 206 to a request without Range", b.what())
		}
		first, last, total, err := v1ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || first != r.pos || (total >= 0 && total != b.size) {
			v1Drain(resp)
			return fmt.Errorf("%s: asked bytes %d-%d of %d, got Content-Range %q", b.what(), r.pos, r.end-1, b.size, resp.Header.Get("Content-Range"))
		}
		r.body = v1LimitedBody(resp.Body, min(last+1, r.end)-r.pos)
		return nil
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			v1Drain(resp)
			return fmt.Errorf("%s: served %d bytes, want %d", b.what(), resp.ContentLength, b.size)
		}
		if ranged {
			// Range ignored: the body starts at byte 0.
			b.noRanges.Store(true)
		}
		if r.pos > 0 {
			if skip := b.c.opts.MaxRangeSkip; skip < 0 || r.pos > skip {
				v1Drain(resp)
				return fmt.Errorf("%s: endpoint ignores Range and byte %d is further in than the %d bytes the client skips: %w", b.what(), r.pos, max(skip, 0), v1ErrRangeUnsupported)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, r.pos); err != nil {
				resp.Body.Close()
				// A cut while skipping is a dropped connection like any other.
				r.body = io.NopCloser(&v1FailingReader{err: fmt.Errorf("skip to %d: %w", r.pos, err)})
				return nil
			}
		}
		r.body = v1LimitedBody(resp.Body, r.end-r.pos)
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		v1Drain(resp)
		return fmt.Errorf("%s: bytes %d-%d of %d: 416 range not satisfiable (layer changed size?)", b.what(), r.pos, r.end-1, b.size)
	}
	return v1StatusErr(b.what(), resp)
}

type v1FailingReader struct{ err error }

func (f *v1FailingReader) Read([]byte) (int, error) { return 0, f.err }

type v1LimitedReadCloser struct {
	io.Reader
	io.Closer
}

func v1LimitedBody(rc io.ReadCloser, n int64) io.ReadCloser {
	return v1LimitedReadCloser{Reader: io.LimitReader(rc, n), Closer: rc}
}

func (r *v1Reader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

func (r *v1Reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("%s: read after close", r.b.what())
	}
	if r.pos >= r.end {
		r.closeBody()
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		want := min(int64(len(p)), r.end-r.pos)
		n, err := r.body.Read(p[:want])
		r.pos += int64(n)
		if n > 0 {
			r.failures = 0
		}
		if r.pos >= r.end {
			r.closeBody()
			return n, nil
		}
		if err == nil {
			return n, nil
		}
		// The body ended before end, or broke: resume from pos.
		r.closeBody()
		if cerr := r.ctx.Err(); cerr != nil {
			return n, fmt.Errorf("%s: %w", r.b.what(), cerr)
		}
		r.failures++
		if r.failures > r.b.c.opts.MaxResumes {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("%s: stream stopped at byte %d (want up to %d) %d times in a row: %w", r.b.what(), r.pos, r.end, r.failures, err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *v1Reader) Close() error {
	r.closed = true
	r.closeBody()
	return nil
}
