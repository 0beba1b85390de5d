package layerindex

import (
	"crypto/sha256"
	"errors"
	"io"
	"sync"
)

// fileHasher computes regular files' ContentSHA256 on a goroutine of its
// own, so a pass's hashing runs beside its decoding rather than after it.
// Chunks go to it in a few recycled buffers, which bounds its memory.
type fileHasher struct {
	work      chan hashWork
	free      chan []byte
	done      chan struct{}
	closeOnce sync.Once
}

// hashWork is a chunk of the current file, or (e set) the file's end.
type hashWork struct {
	data []byte
	e    *Entry
}

const (
	hashBuffers   = 8
	hashChunkSize = 64 << 10
)

func newFileHasher() *fileHasher {
	fh := &fileHasher{work: make(chan hashWork, hashBuffers), free: make(chan []byte, hashBuffers), done: make(chan struct{})}
	for range hashBuffers {
		fh.free <- make([]byte, hashChunkSize)
	}
	go fh.run()
	return fh
}

func (fh *fileHasher) run() {
	defer close(fh.done)
	h := sha256.New()
	for w := range fh.work {
		if w.e != nil {
			h.Sum(w.e.ContentSHA256[:0])
			h.Reset()
			continue
		}
		h.Write(w.data)
		fh.free <- w.data[:cap(w.data)]
	}
}

// hash reads r, one file's content, to its end for e's ContentSHA256,
// which is set once close has returned.
func (fh *fileHasher) hash(r io.Reader, e *Entry) error {
	buf, n := <-fh.free, 0
	for {
		m, err := r.Read(buf[n:])
		n += m
		if n > 0 && (n == len(buf) || err != nil) {
			fh.work <- hashWork{data: buf[:n]}
			buf, n = <-fh.free, 0
		}
		if errors.Is(err, io.EOF) {
			fh.free <- buf
			fh.work <- hashWork{e: e}
			return nil
		}
		if err != nil {
			fh.free <- buf
			return err
		}
	}
}

// close waits for every hash sent to be set; safe to call again.
func (fh *fileHasher) close() {
	fh.closeOnce.Do(func() {
		close(fh.work)
		<-fh.done
	})
}
