package blobio

import (
	"context"
	"io"
)

// ReaderAt reads an immutable byte sequence by range. ReadAt reads len(p)
// bytes at off as io.ReaderAt does (a full read, or an error; io.EOF only
// when off+len(p) passes the end) and stops early when ctx is done.
type ReaderAt interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Source is one stored blob as a registry serves it.
type Source interface {
	ReaderAt
	// Key names the blob's content (its digest, or a v1 layer's identity):
	// whatever is derived from the bytes of one Key is valid forever.
	Key() string
	// Open streams bytes [off, off+n) (n < 0: to the end), for long
	// sequential passes. The stream ends with io.EOF after exactly those
	// bytes, or with an error; a whole-blob stream of a verifying Source
	// reports a digest mismatch as its final error.
	Open(ctx context.Context, off, n int64) (io.ReadCloser, error)
}
