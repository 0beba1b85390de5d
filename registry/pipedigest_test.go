package registry

import (
	"math/rand"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestPipedDigester checks the off-goroutine hash against the plain one for
// writes of every shape: empty, smaller than a chunk, exactly a chunk, many
// rings long, odd sizes across chunk borders; and that a buffer reused right
// after write does not change the digest.
func TestPipedDigester(t *testing.T) {
	data := make([]byte, 3*pipeChunk*pipeChunks+12345)
	rand.New(rand.NewSource(1)).Read(data)
	tests := []struct {
		name  string
		size  int
		write int // bytes per write
	}{
		{"empty", 0, 1},
		{"one byte", 1, 1},
		{"under a chunk", pipeChunk - 1, 4096},
		{"one chunk", pipeChunk, pipeChunk},
		{"odd writes over rings", len(data), 100003},
		{"one big write", len(data), len(data)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := digest.FromBytes(data[:tc.size])
			d := newPipedDigester(digest.SHA256)
			scratch := make([]byte, tc.write)
			for off := 0; off < tc.size; off += tc.write {
				n := copy(scratch, data[off:min(off+tc.write, tc.size)])
				d.write(scratch[:n])
				for i := range scratch[:n] {
					scratch[i] = ^scratch[i] // the caller reuses its buffer at once
				}
			}
			if got := d.digest(); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if got := d.digest(); got != want {
				t.Errorf("second digest(): got %s, want %s", got, want)
			}
			d.stop() // after digest: a no-op
		})
	}
}

// TestPipedDigesterAbandoned: a stream closed early stops its hasher without
// waiting for a verdict, and a closed stream's digester takes no writes.
func TestPipedDigesterAbandoned(t *testing.T) {
	d := newPipedDigester(digest.SHA256)
	d.write(make([]byte, 5*pipeChunk+7))
	d.abandon.Store(true)
	d.stop()
	d.stop() // idempotent
	if !d.stopped {
		t.Errorf("got stopped=false after stop, want true")
	}
}
