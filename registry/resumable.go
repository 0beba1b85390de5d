package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// resumableReader reads spans of one immutable blob over HTTP, for both
// APIs (v2Blob, v1Blob), so that the caller gets exactly the bytes asked for
// or an error:
//
//   - a 206 must carry the Content-Range asked for (a shorter span is read
//     and the rest asked next); a 200 must have the blob's size. A 200 to a
//     Range request (a cold pull-through cache's miss) is judged per answer,
//     never remembered for the host: it is read to its end whatever the
//     requester does, so such a cache keeps the blob, and while it is read
//     other requests of the blob take their bytes from it or wait for its
//     end rather than ask again; until a 206 came for the blob, its
//     requests ask one at a time (rangegate.go, wholeanswer.go);
//   - a body that ends early or breaks (reset, stall) is asked again from
//     the next byte; a connection that brought no byte counts against
//     maxResumes and backs off first;
//   - a whole-blob stream with verify set ends with ErrDigestMismatch
//     instead of io.EOF if the bytes were wrong.
type resumableReader struct {
	// what names the blob in errors and logs.
	what string
	// size is the blob's exact size.
	size int64
	// fetch sends one GET of the blob with rangeHeader as its Range header
	// ("" for none) and Accept-Encoding: identity, and returns the response
	// whatever its status, or an error when no response came (after any
	// retries of its own).
	fetch func(ctx context.Context, rangeHeader string) (*http.Response, error)
	// statusErr turns a response other than 200, 206 and 416 into an
	// error and closes its body. Nil: an *HTTPError.
	statusErr func(resp *http.Response) error
	// gates admits the client's requests of the blob (by what) and shares
	// whole answers among them (rangegate.go). Nil: every request asks.
	gates *rangeGates
	// maxResumes bounds consecutive reconnects that bring no new byte.
	maxResumes int
	// backoffMin, backoffMax bound the pause before a reconnect after a
	// connection that brought nothing.
	backoffMin, backoffMax time.Duration
	// verify, when set, is checked over a whole-blob stream.
	verify digest.Digest
	// log receives resumes (debug) and whole-blob answers to Range
	// requests (info). Nil: logrus's standard logger.
	log *logrus.Entry

	// resumes counts reconnects, for tests and stats.
	resumes atomic.Int64
}

func (r *resumableReader) logger() *logrus.Entry {
	if r.log == nil {
		return logrus.NewEntry(logrus.StandardLogger())
	}
	return r.log
}

// readAt reads len(p) bytes at off as io.ReaderAt does: all of them, or an
// error; io.EOF when off+len(p) passes the end (after the bytes that exist).
func (r *resumableReader) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", r.what, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	rc, err := r.open(ctx, off, n)
	if err != nil {
		return 0, err
	}
	got, err := io.ReadFull(rc, p[:n])
	rc.Close()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the stream ends only after n bytes
		}
		return got, fmt.Errorf("%s: read [%d,%d): %w", r.what, off, off+n, err)
	}
	if n < int64(len(p)) {
		return got, io.EOF
	}
	return got, nil
}

// open streams bytes [off, off+n) (n < 0: to the end). The first request
// is made before open returns, so a missing blob or a refusal shows here.
func (r *resumableReader) open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if n < 0 {
		n = r.size - off
	}
	if off < 0 || off > r.size || n > r.size-off {
		return nil, fmt.Errorf("%s: open [%d,%d) outside the blob's %d bytes", r.what, off, off+n, r.size)
	}
	s := &resumeStream{r: r, ctx: ctx, start: off, pos: off, end: off + n}
	if off == 0 && n == r.size && r.verify != "" && r.verify.Algorithm().Available() {
		s.digester = newPipedDigester(r.verify.Algorithm())
	}
	if n > 0 {
		if err := s.connect(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// resumeStream is one open span.
type resumeStream struct {
	r               *resumableReader
	ctx             context.Context
	start, pos, end int64
	body            io.ReadCloser
	// connBytes is what the current connection brought.
	connBytes int64
	// failures counts consecutive connections that brought no byte.
	failures int
	digester *pipedDigester
	err      error // sticky
	closed   bool
}

// connect sets body to exactly the bytes [pos, end) of one answer: a
// whole answer being read that has not passed pos yet, else a request of
// its own, admitted by r.gates.
func (s *resumeStream) connect() error {
	r := s.r
	s.connBytes = 0
	for {
		a, alone, err := r.gates.admit(s.ctx, r.what)
		if err != nil {
			return fmt.Errorf("%s: waiting for another request's answer: %w", r.what, err)
		}
		if a == nil {
			return s.ask(alone)
		}
		if body, ok := a.join(s.ctx, s.pos, s.end); ok {
			s.body = body
			return nil
		}
		// Its bytes before pos went by. A pull-through cache keeps the
		// blob once the answer ends and then honours Range; a request now
		// would be one more copy from its origin.
		if err := a.wait(s.ctx); err != nil {
			return fmt.Errorf("%s: waiting for the end of a whole-blob answer: %w", r.what, err)
		}
	}
}

// ask makes one request for [pos, end), sets body to exactly the bytes
// from pos on that the answer holds, and reports the answer to r.gates
// (alone: admitted to ask alone). A 200 to a Range request becomes a
// whole answer, read to its end (wholeanswer.go); a 200 to a request for
// the whole blob is its requester's alone, as a 206 is.
func (s *resumeStream) ask(alone bool) (err error) {
	r := s.r
	reported := false
	defer func() {
		if !reported {
			r.gates.answered(r.what, alone, false, nil)
		}
	}()
	ranged := s.pos > 0 || s.end < r.size
	rangeHeader := ""
	if ranged {
		rangeHeader = fmt.Sprintf("bytes=%d-%d", s.pos, s.end-1)
	}
	// The request outlives s.ctx if its answer is a whole blob, read to
	// its end; any other answer ends with s.ctx, or when its body closes.
	reqCtx, cancelReq := context.WithCancel(context.WithoutCancel(s.ctx))
	unlink := context.AfterFunc(s.ctx, cancelReq)
	resp, err := r.fetch(reqCtx, rangeHeader)
	if err != nil {
		unlink()
		cancelReq()
		if cerr := s.ctx.Err(); cerr != nil {
			return fmt.Errorf("%s: %w", r.what, cerr)
		}
		return err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: func() { unlink(); cancelReq() }}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		first, last, total, perr := parseContentRange(cr)
		switch {
		case !ranged:
			drain(resp)
			return fmt.Errorf("%s: 206 Partial Content to a request without Range", r.what)
		case perr != nil || first != s.pos || (total >= 0 && total != r.size):
			drain(resp)
			return fmt.Errorf("%s: asked bytes %d-%d of %d, got Content-Range %q", r.what, s.pos, s.end-1, r.size, cr)
		}
		r.gates.answered(r.what, alone, true, nil)
		reported = true
		s.body = limitBody(resp.Body, min(last+1, s.end)-s.pos)
		return nil
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != r.size {
			drain(resp)
			return fmt.Errorf("%s: served %d bytes, want %d", r.what, resp.ContentLength, r.size)
		}
		if !ranged {
			s.body = limitBody(resp.Body, s.end-s.pos)
			return nil
		}
		if !unlink() {
			// s.ctx ended as the answer came: the request is cancelled.
			resp.Body.Close()
			return fmt.Errorf("%s: %w", r.what, s.ctx.Err())
		}
		a := newWholeAnswer(r.what, r.size)
		body, _ := a.join(s.ctx, s.pos, s.end)
		shared := r.gates.answered(r.what, alone, false, a)
		reported = true
		r.logger().Infof("%s: asked bytes %d-%d, the server answered the whole blob (a cold pull-through cache does): reading it to its end once",
			r.what, s.pos, s.end-1)
		go a.run(resp.Body, func() {
			if shared {
				r.gates.ended(r.what, a)
			}
		})
		s.body = body
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		drain(resp)
		return fmt.Errorf("%s: bytes %d-%d: 416 Range Not Satisfiable (is the blob smaller than %d bytes?)", r.what, s.pos, s.end-1, r.size)
	}
	if r.statusErr != nil {
		return r.statusErr(resp)
	}
	return fmt.Errorf("%s: %w", r.what, newHTTPError(resp))
}

// releasingBody calls release once closed.
type releasingBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// resumeAfter decides whether to reconnect after the body failed with
// cause, the dead connection having brought progress bytes.
func (s *resumeStream) resumeAfter(cause error, progress int64) error {
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", s.r.what, err)
	}
	if errors.Is(cause, io.EOF) {
		cause = io.ErrUnexpectedEOF
	}
	if progress > 0 {
		s.failures = 0
	}
	s.failures++
	if s.failures > s.r.maxResumes {
		return fmt.Errorf("%s: connection ended at byte %d of [%d,%d) %d times in a row without progress: %w",
			s.r.what, s.pos, s.start, s.end, s.failures, cause)
	}
	s.r.resumes.Add(1)
	s.r.logger().Debugf("%s: resuming at byte %d after: %v", s.r.what, s.pos, cause)
	if s.failures > 1 {
		d := s.r.backoffMin
		for i := 2; i < s.failures && d < s.r.backoffMax; i++ {
			d *= 2
		}
		if err := sleepCtx(s.ctx, min(d, s.r.backoffMax)); err != nil {
			return fmt.Errorf("%s: %w", s.r.what, err)
		}
	}
	return nil
}

func (s *resumeStream) closeBody() {
	if s.body != nil {
		s.body.Close()
		s.body = nil
	}
}

// finish is what Read returns at the end: io.EOF, or a digest mismatch.
func (s *resumeStream) finish() error {
	if s.digester != nil {
		if got := s.digester.digest(); got != s.r.verify {
			s.err = &DigestError{What: s.r.what, Want: s.r.verify, Got: got}
			return s.err
		}
	}
	return io.EOF
}

func (s *resumeStream) Read(p []byte) (int, error) {
	if s.closed {
		return 0, fmt.Errorf("%s: read after close", s.r.what)
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.pos >= s.end {
		s.closeBody()
		return 0, s.finish()
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if s.body == nil {
			if err := s.connect(); err != nil {
				s.err = err
				return 0, err
			}
		}
		want := min(int64(len(p)), s.end-s.pos)
		n, err := s.body.Read(p[:want])
		if n > 0 {
			s.pos += int64(n)
			s.connBytes += int64(n)
			if s.digester != nil {
				s.digester.write(p[:n])
			}
		}
		if s.pos >= s.end {
			s.closeBody()
			if n > 0 {
				return n, nil
			}
			return 0, s.finish()
		}
		if err == nil {
			if n > 0 {
				return n, nil
			}
			continue
		}
		// The body ended before end, or broke: ask again from pos.
		progress := s.connBytes
		s.closeBody()
		if rerr := s.resumeAfter(err, progress); rerr != nil {
			s.err = rerr
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (s *resumeStream) Close() error {
	s.closed = true
	s.closeBody()
	if s.digester != nil {
		s.digester.abandon.Store(true) // no verdict is due any more
		s.digester.stop()
	}
	return nil
}

// pipedDigester hashes a stream on a goroutine of its own, so that hashing
// overlaps the reading. The bytes are copied into a ring of pipeChunks
// chunks: the caller may reuse its buffer as soon as write returns, and
// write waits only when the hasher is the whole ring behind (which bounds
// the memory).
type pipedDigester struct {
	cur     []byte      // the chunk being filled
	full    chan []byte // chunks to hash, in order
	free    chan []byte // hashed chunks, to fill again
	done    chan struct{}
	h       digest.Digester
	result  digest.Digest // set once the hasher is done
	stopped bool
	abandon atomic.Bool // the hasher skips what is left
}

const (
	pipeChunk  = 1 << 20
	pipeChunks = 4
)

// pipeChunkFree keeps the chunks of finished rings for the next stream, at
// most two rings' worth: fresh memory pays a page fault per page on first
// touch. Not a sync.Pool, which every GC empties.
var pipeChunkFree = make(chan []byte, 2*pipeChunks)

func getPipeChunk() []byte {
	select {
	case c := <-pipeChunkFree:
		return c[:0]
	default:
		return make([]byte, 0, pipeChunk)
	}
}

func putPipeChunk(c []byte) {
	select {
	case pipeChunkFree <- c[:0]:
	default: // enough kept: the GC frees it
	}
}

func newPipedDigester(a digest.Algorithm) *pipedDigester {
	d := &pipedDigester{
		full: make(chan []byte, pipeChunks),
		free: make(chan []byte, pipeChunks),
		done: make(chan struct{}),
		h:    a.Digester(),
	}
	for range pipeChunks {
		d.free <- getPipeChunk()
	}
	go func() {
		defer close(d.done)
		for c := range d.full {
			if !d.abandon.Load() {
				d.h.Hash().Write(c)
			}
			d.free <- c[:0]
		}
	}()
	return d
}

// write hashes a copy of p, in order after what came before.
func (d *pipedDigester) write(p []byte) {
	for len(p) > 0 {
		if d.cur == nil {
			d.cur = <-d.free
		}
		n := copy(d.cur[len(d.cur):cap(d.cur)], p)
		d.cur = d.cur[:len(d.cur)+n]
		p = p[n:]
		if len(d.cur) == cap(d.cur) {
			d.full <- d.cur
			d.cur = nil
		}
	}
}

// digest waits for the hasher to take in everything written and returns
// the digest; the digester takes no more writes after it.
func (d *pipedDigester) digest() digest.Digest {
	if !d.stopped {
		if len(d.cur) > 0 {
			d.full <- d.cur
			d.cur = nil
		}
		d.stop()
		d.result = d.h.Digest()
	}
	return d.result
}

// stop ends the hasher (idempotent) and returns the ring to the pool.
func (d *pipedDigester) stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	close(d.full)
	<-d.done
	if d.cur != nil {
		d.free <- d.cur
		d.cur = nil
	}
	close(d.free)
	for c := range d.free {
		putPipeChunk(c)
	}
}

// limitBody reads at most n bytes of rc and closes rc.
func limitBody(rc io.ReadCloser, n int64) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, n), rc}
}

// parseContentRange reads "bytes first-last/total" (total "*": -1).
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", h)
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
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
