package tarsum

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrMismatch: the stream's tarsum is not the expected one (see MismatchError).
var ErrMismatch = errors.New("tarsum mismatch")

// MismatchError reports a stream whose tarsum differs from the expected one.
type MismatchError struct {
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("tarsum mismatch: got %s, want %s", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Compute reads all of r and returns its tarsum over extra (nil for none).
// ctx is checked between reads; r should honour it too (an HTTP body whose
// request carries ctx does).
func Compute(ctx context.Context, r io.Reader, opts Options, extra []byte) (string, error) {
	ts, err := New(r, opts)
	if err != nil {
		return "", err
	}
	if err := consume(ctx, ts); err != nil {
		return "", err
	}
	return ts.Sum(extra), nil
}

// Verify reads all of r (a plain or gzip-compressed tar) and checks its
// tarsum over extra (nil for none; the image JSON for a docker v1 checksum)
// against want, whose prefix ("tarsum.v1+sha256:") picks version and hash.
// A different sum is a *MismatchError.
func Verify(ctx context.Context, r io.Reader, want string, extra []byte) error {
	return VerifyWith(ctx, r, want, extra, Options{})
}

// VerifyWith is Verify with the compatibility switches of opts; the version
// and hash always come from want.
func VerifyWith(ctx context.Context, r io.Reader, want string, extra []byte, opts Options) error {
	c, err := ParseChecksum(want)
	if err != nil {
		return fmt.Errorf("verify tarsum: %w", err)
	}
	opts.Version, opts.Hash = c.Version, c.Hash
	got, err := Compute(ctx, r, opts, extra)
	if err != nil {
		return fmt.Errorf("verify tarsum %s: %w", want, err)
	}
	if got != c.String() {
		return &MismatchError{Want: want, Got: got}
	}
	return nil
}

func consume(ctx context.Context, ts *TarSum) error {
	buf := make([]byte, bodyChunk)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tarsum: %w", err)
		}
		_, err := ts.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
