package layercache

import "context"

// Source is a blob readable by range; registry.Blob satisfies it. The cache
// calls ReadAt only with block-aligned spans (the last block may be short).
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
