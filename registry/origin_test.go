package registry

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/registry/registrytest"
)

// A blob declares where it comes from and what it must hash to; a client
// with UnverifiedStreams leaves the whole-blob stream's hash to its
// consumer (the block cache), one without checks it.
func TestBlobOriginAndStreamVerify(t *testing.T) {
	reg, fx := smallRegistry(t)
	l := fx.Small.Layers[0]
	evil := registrytest.StartEvilRegistry(t, reg, registrytest.LieOnFullGET, l.Digest)
	ctx := context.Background()
	for _, unverified := range []bool{false, true} {
		o := testOptions()
		o.UnverifiedStreams = unverified
		c := newClient(t, evil.Host, o)
		b, err := c.OpenBlob(ctx, registrytest.RepoSmall, Layer{Digest: l.Digest, Size: l.Size})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := b.Origin(), (blobio.Origin{Host: evil.Host, Digest: l.Digest.String()}); got != want {
			t.Errorf("Origin: got %+v, want %+v", got, want)
		}
		got, err := openAll(ctx, b)
		switch {
		case !unverified && !errors.Is(err, ErrDigestMismatch):
			t.Errorf("whole stream of wrong bytes, verifying: got %v, want ErrDigestMismatch", err)
		case unverified && (err != nil || !bytes.Equal(got, registrytest.Mangle(l.Blob))):
			t.Errorf("whole stream of wrong bytes, UnverifiedStreams: got %d bytes, %v; want the bytes as served", len(got), err)
		}
	}
}
