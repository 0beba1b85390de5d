package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// wholeAnswerChunk is what a whole answer reads from its body at a time.
const wholeAnswerChunk = 256 << 10

// wholeAnswer is a 200 (the whole blob) that answered a Range request, as
// a cold pull-through cache answers one: such a cache keeps the blob only
// if its client takes the last byte. The answer is read to its end on a
// goroutine of its own, whatever its requester does, and each piece goes
// to the taps whose span it overlaps: the requester's, and those of later
// requests for bytes it has not reached yet (rangeGates shares it).
//
// Contracts: a tap gets exactly the bytes of its span, in order, then
// io.EOF, or an error when the body breaks first (its reader resumes with
// a request of its own); the answer waits for a tap's reader (no buffering
// beyond one chunk), and drops a tap whose reader closed it or whose
// context ended; done closes after the last byte, or the error, once no
// new tap can join.
type wholeAnswer struct {
	what string
	size int64
	done chan struct{}

	mu    sync.Mutex
	pos   int64 // bytes before pos were read and handed out (or are being)
	taps  []*answerTap
	ended bool
}

// answerTap is one reader's span [lo, hi) of a wholeAnswer.
type answerTap struct {
	lo, hi int64
	pw     *io.PipeWriter
}

func newWholeAnswer(what string, size int64) *wholeAnswer {
	return &wholeAnswer{what: what, size: size, done: make(chan struct{})}
}

// join returns a stream of bytes [lo, hi) taken from the answer as it goes
// by, or false when the answer has passed lo or ended. The stream fails
// with ctx's error when ctx ends first.
func (a *wholeAnswer) join(ctx context.Context, lo, hi int64) (io.ReadCloser, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended || lo < a.pos || hi <= lo || hi > a.size {
		return nil, false
	}
	pr, pw := io.Pipe()
	a.taps = append(a.taps, &answerTap{lo: lo, hi: hi, pw: pw})
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	return &tapReader{PipeReader: pr, stop: stop}, true
}

// tapReader is a tap's read end; Close leaves the answer.
type tapReader struct {
	*io.PipeReader
	stop func() bool
}

func (t *tapReader) Close() error {
	t.stop()
	return t.PipeReader.Close()
}

// wait waits for the answer's end (or ctx's).
func (a *wholeAnswer) wait(ctx context.Context) error {
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run reads body, which holds the whole blob, to the blob's end, hands the
// taps their bytes, closes body, calls ended (before done closes, so a
// waiter woken finds no stale answer) and closes done.
func (a *wholeAnswer) run(body io.ReadCloser, ended func()) {
	buf := make([]byte, wholeAnswerChunk)
	var err error
	for pos := int64(0); pos < a.size; {
		n, rerr := body.Read(buf[:min(int64(len(buf)), a.size-pos)])
		if n > 0 {
			lo, hi := pos, pos+int64(n)
			a.mu.Lock()
			a.pos = hi // from here on, a tap starting before hi cannot join
			taps := slices.Clone(a.taps)
			a.mu.Unlock()
			for _, t := range taps {
				if t.hi <= lo || t.lo >= hi {
					continue
				}
				from, to := max(lo, t.lo), min(hi, t.hi)
				if _, werr := t.pw.Write(buf[from-lo : to-lo]); werr != nil || to == t.hi {
					t.pw.Close() // complete: EOF; or its reader left
					a.drop(t)
				}
			}
			pos = hi
		}
		if rerr != nil && pos < a.size {
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			err = fmt.Errorf("%s: whole-blob answer broke at byte %d of %d: %w", a.what, pos, a.size, rerr)
			break
		}
	}
	body.Close()
	a.mu.Lock()
	a.ended = true
	left := a.taps
	a.taps = nil
	a.mu.Unlock()
	for _, t := range left {
		t.pw.CloseWithError(err) // only a broken answer leaves taps unfinished
	}
	ended()
	close(a.done)
}

func (a *wholeAnswer) drop(t *answerTap) {
	a.mu.Lock()
	a.taps = slices.DeleteFunc(a.taps, func(x *answerTap) bool { return x == t })
	a.mu.Unlock()
}
