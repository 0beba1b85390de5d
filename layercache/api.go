package layercache

import (
	"context"
	"io"
)

// Source is a blob readable by range; registry.Blob satisfies it. The cache
// calls ReadAt with block-aligned spans (the last block may be short), and
// with the exact span a Reader.ReadExact asks for.
type Source interface {
	// Key names the blob's content; blocks of one Key are valid forever.
	Key() string
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// ReaderAt is what the cache hands out for one blob: the same contract as
// Source.ReadAt (full reads or an error; io.EOF only past the end), served
// from cached blocks where it can.
type ReaderAt interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// StreamSource is optionally implemented by a Source (registry.Blob does):
// a run of several blocks is then fetched with one Open of exactly that
// span, read straight into per-block buffers, which saves a copy of every
// byte. Open must return an error, or a stream of exactly n bytes then
// io.EOF. The cache reads to io.EOF, so an error reported only at the end
// (registry.Blob's digest mismatch on a whole-blob stream) fails the fetch;
// a stream ending early or running long is an error; nothing of a failed
// fetch is cached.
type StreamSource interface {
	Source
	Open(ctx context.Context, off, n int64) (io.ReadCloser, error)
}
