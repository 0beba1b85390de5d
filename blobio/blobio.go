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
	// Origin says where the bytes come from and what can verify them. A
	// cache shares bytes across origins only once they hash to
	// Origin().Digest; until then they belong to Origin().Host alone.
	Origin() Origin
	// Open streams bytes [off, off+n) (n < 0: to the end), for long
	// sequential passes. The stream ends with io.EOF after exactly those
	// bytes, or with an error; a whole-blob stream of a verifying Source
	// may report a digest mismatch as its final error. Neither ReadAt nor
	// Open promises verified bytes: a consumer that must trust them hashes
	// them against Origin().Digest (layercache does).
	Open(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// Origin is where a Source's bytes come from and what they must hash to.
type Origin struct {
	// Host is the registry serving the bytes; "" for local data whose Key
	// is trusted as it is (tests, files on this machine).
	Host string
	// Digest is the content digest the whole blob must hash to
	// ("sha256:<hex>"); "" when the blob has none (v1 layers): such bytes
	// are never verified and never shared beyond Host.
	Digest string
}
