package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/regfs/regfs/blobio"
)

// v1Blob is one v1 layer, GET /v1/images/<id>/layer on the repository's
// endpoints, read through the package's resumableReader: ranged, resumed
// from the next byte when a body breaks or stalls, failing over across the
// endpoints on each request.
type v1Blob struct {
	c        *v1Client
	repo, id string
	key      string
	rr       *resumableReader
}

var _ blobio.Source = (*v1Blob)(nil)

func (b *v1Blob) Key() string { return b.key }
func (b *v1Blob) Size() int64 { return b.rr.size }

// Origin is the registry host; a v1 layer has no content digest.
func (b *v1Blob) Origin() blobio.Origin { return blobio.Origin{Host: b.c.host} }

// ReadAt reads len(p) bytes at off, as io.ReaderAt does.
func (b *v1Blob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return b.rr.readAt(ctx, p, off)
}

// Open streams bytes [off, off+n) (n < 0: to the end). The first request is
// made before Open returns, so a missing layer or a refused token shows here.
func (b *v1Blob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return b.rr.open(ctx, off, n)
}

// newV1Blob makes the handle for layer id of repo (normalized) with size
// bytes (-1: unknown yet, to be set before use).
func (c *v1Client) newV1Blob(repo, id string, size int64) *v1Blob {
	what := fmt.Sprintf("v1 layer %s in %s/%s", id, c.host, repo)
	b := &v1Blob{c: c, repo: repo, id: id, key: "v1:" + c.host + "/" + id}
	b.rr = &resumableReader{
		what: what,
		size: size,
		fetch: func(ctx context.Context, rangeHeader string) (*http.Response, error) {
			return c.endpointGet(ctx, repo, what, "images/"+id+"/layer", true, func(r *http.Request) {
				// identity: Go's transport would otherwise ask for gzip and
				// decompress a gzip-encoded answer, changing the bytes.
				r.Header.Set("Accept-Encoding", "identity")
				if rangeHeader != "" {
					r.Header.Set("Range", rangeHeader)
				}
			})
		},
		statusErr:  func(resp *http.Response) error { return v1StatusErr(what, resp) },
		gates:      &c.gates,
		maxResumes: c.opts.MaxResumes,
		backoffMin: c.opts.RetryBackoffMin,
		backoffMax: c.opts.RetryBackoffMax,
		log:        c.log,
	}
	return b
}

// probeSize learns the size of a layer whose JSON gave no X-Docker-Size,
// from the Content-Range (or Content-Length) of a one-byte request.
func (b *v1Blob) probeSize(ctx context.Context) (int64, error) {
	what := b.rr.what + " size"
	resp, err := b.c.endpointGet(ctx, b.repo, what, "images/"+b.id+"/layer", true, func(r *http.Request) {
		r.Header.Set("Range", "bytes=0-0")
		r.Header.Set("Accept-Encoding", "identity")
	})
	if err != nil {
		return -1, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		defer drain(resp)
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return -1, fmt.Errorf("%s: unknown: Content-Range %q", what, resp.Header.Get("Content-Range"))
		}
		return total, nil
	case http.StatusOK:
		resp.Body.Close()
		if resp.ContentLength < 0 {
			return -1, fmt.Errorf("%s: unknown: no X-Docker-Size and no Content-Length", what)
		}
		return resp.ContentLength, nil
	case http.StatusRequestedRangeNotSatisfiable:
		drain(resp)
		// Only an empty layer has no byte 0.
		return 0, nil
	}
	return -1, v1StatusErr(what, resp)
}
