package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/blobio"
)

// v2Blob is one blob of a repository, GET /v2/<name>/blobs/<digest>.
type v2Blob struct {
	dgst digest.Digest
	host string
	rr   *resumableReader
}

var _ blobio.Source = (*v2Blob)(nil)

func (b *v2Blob) Key() string { return b.dgst.String() }
func (b *v2Blob) Size() int64 { return b.rr.size }

// Origin is the registry host and the blob's digest.
func (b *v2Blob) Origin() blobio.Origin {
	return blobio.Origin{Host: b.host, Digest: b.dgst.String()}
}

// ReadAt reads len(p) bytes at off, resuming dropped connections.
func (b *v2Blob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return b.rr.readAt(ctx, p, off)
}

// Open streams [off, off+n) (n < 0: to the end). A stream of the whole
// blob is checked against its digest (unless Options.UnverifiedStreams):
// it ends with ErrDigestMismatch instead of io.EOF if the bytes were wrong.
func (b *v2Blob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return b.rr.open(ctx, off, n)
}

// OpenBlob returns a handle on the blob l.Digest of repo; when l.Size is
// unknown (< 0) it asks HEAD for it.
func (c *v2Client) OpenBlob(ctx context.Context, repo string, l Layer) (blobio.Source, error) {
	rp, err := c.repoPath(repo)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", l.Digest, err)
	}
	if err := l.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("open blob %q in %s/%s: %w", l.Digest, c.host, rp, err)
	}
	what := fmt.Sprintf("blob %s/%s@%s", c.host, rp, l.Digest)
	url := c.url("/v2/" + rp + "/blobs/" + l.Digest.String())
	scope := repoScope(rp)
	size := l.Size
	if size < 0 {
		if size, err = c.blobSize(ctx, what, scope, url); err != nil {
			return nil, err
		}
	}
	blobs := &redirectMemory{next: c.scoped(scope), locations: &c.locations, log: c.log}
	rr := &resumableReader{
		what: what,
		size: size,
		fetch: func(ctx context.Context, rangeHeader string) (*http.Response, error) {
			// identity: Go's transport would otherwise ask for gzip and
			// decompress a gzip-encoded answer, changing the bytes.
			hdr := http.Header{"Accept-Encoding": {"identity"}}
			if rangeHeader != "" {
				hdr.Set("Range", rangeHeader)
			}
			resp, err := send(ctx, blobs, http.MethodGet, url, hdr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			return resp, nil
		},
		statusErr: func(resp *http.Response) error {
			return fmt.Errorf("%s: %w", what, newHTTPError(resp))
		},
		gates:      &c.gates,
		maxResumes: c.opts.MaxResumes,
		backoffMin: c.opts.RetryBackoffMin,
		backoffMax: c.opts.RetryBackoffMax,
		verify:     c.streamDigest(l.Digest),
		log:        c.log,
	}
	return &v2Blob{dgst: l.Digest, host: c.host, rr: rr}, nil
}

// streamDigest is what a whole-blob stream of d is checked against: d,
// or nothing with Options.UnverifiedStreams.
func (c *v2Client) streamDigest(d digest.Digest) digest.Digest {
	if c.opts.UnverifiedStreams {
		return ""
	}
	return d
}

// blobSize asks HEAD for a blob's size; a server that sends no
// Content-Length is asked for byte 0 and its Content-Range total.
func (c *v2Client) blobSize(ctx context.Context, what, scope, url string) (int64, error) {
	resp, err := c.do(ctx, what+" size", scope, http.MethodHead, url, http.Header{"Accept-Encoding": {"identity"}})
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("%s: size: %w", what, newHTTPError(resp))
	}
	drain(resp)
	if resp.ContentLength >= 0 {
		return resp.ContentLength, nil
	}
	resp, err = c.do(ctx, what+" size", scope, http.MethodGet, url,
		http.Header{"Accept-Encoding": {"identity"}, "Range": {"bytes=0-0"}})
	if err != nil {
		return -1, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, _, total, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && total >= 0 {
			return total, nil
		}
		return -1, fmt.Errorf("%s: size unknown: Content-Range %q", what, resp.Header.Get("Content-Range"))
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			return resp.ContentLength, nil
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, nil // only an empty blob has no byte 0
	default:
		return -1, fmt.Errorf("%s: size: %w", what, newHTTPError(resp))
	}
	return -1, fmt.Errorf("%s: size unknown: no Content-Length", what)
}
