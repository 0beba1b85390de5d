package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// The attack cases of a registry that lies, read through the real cache:
// no wrong byte is served once the cache could know, none is ever served
// with --verify=strict, and none is persisted where another registry (or
// a later session) reads it.

const trustBlock = 4 << 10

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func clientOf(t *testing.T, host string) registry.Client {
	t.Helper()
	c, err := registry.New(context.Background(), host, registry.Options{API: registry.APIAuto, PlainHTTP: true, Logger: quietLog(),
		MaxResumes: 2})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// layerReader opens layer li of test/small:latest from host through a new
// cache on dir.
func layerReader(t *testing.T, host, dir string, li int, verify layercache.VerifyMode) (*layercache.Cache, *layercache.Reader) {
	t.Helper()
	ctx := context.Background()
	client := clientOf(t, host)
	img, err := client.Resolve(ctx, "test/small", "latest", registry.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := layercache.New(layercache.Options{BlockSize: trustBlock, DiskDir: dir, Verify: verify, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	s, err := New(Options{Client: client, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Layer(img.Repository, img.Layers[li]).Reader(ctx, layercache.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return cache, r
}

// largestLayer is the index of the fixture's layer with the most blocks.
func largestLayer(fx *registrytest.Fixtures) int {
	li := 0
	for i, l := range fx.Small.Layers {
		if l.Size > fx.Small.Layers[li].Size {
			li = i
		}
	}
	return li
}

// readChecked reads n bytes at off; a read that succeeds must give the
// honest bytes when strict (or when the cache could know), and reports
// whether it did.
func readChecked(t *testing.T, r *layercache.Reader, honest []byte, off int64, n int) (ok, right bool) {
	t.Helper()
	p := make([]byte, n)
	m, err := r.ReadAt(context.Background(), p, off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(m) == int64(len(honest))-off) {
		return false, false
	}
	return true, bytes.Equal(p[:m], honest[off:off+int64(m)])
}

func TestEvilRegistryThroughCache(t *testing.T) {
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	li := largestLayer(fx)
	layer := fx.Small.Layers[li]
	honest := layer.Blob
	if len(honest) < 3*trustBlock {
		t.Fatalf("layer %s: %d bytes, want at least 3 blocks of %d", layer.Digest, len(honest), trustBlock)
	}
	last := int64(len(honest)-1) / trustBlock * trustBlock
	for _, lie := range []registrytest.Lie{registrytest.LieWrongBytes, registrytest.LieOnRanges, registrytest.LieOnFullGET,
		registrytest.LieContentRange, registrytest.LieShortBody} {
		t.Run(lie.String(), func(t *testing.T) {
			evil := registrytest.StartEvilRegistry(t, reg, lie, layer.Digest)

			// Strict: nothing is served before the blob is verified, so
			// every read that succeeds is right.
			_, sr := layerReader(t, evil.Host, t.TempDir(), li, layercache.VerifyStrict)
			for _, off := range []int64{trustBlock, last, 0, trustBlock} {
				if ok, right := readChecked(t, sr, honest, off, trustBlock); ok && !right {
					t.Errorf("strict read at %d: served wrong bytes", off)
				}
			}

			// Lazy: a file's blocks read twice, then the whole blob in
			// order; once that pass could tell, no read succeeds wrong.
			dir := t.TempDir()
			cache, r := layerReader(t, evil.Host, dir, li, layercache.VerifyLazy)
			for range 2 {
				readChecked(t, r, honest, trustBlock, 2*trustBlock)
			}
			passOK := true
			for off := int64(0); off < int64(len(honest)); off += trustBlock {
				ok, right := readChecked(t, r, honest, off, trustBlock)
				passOK = passOK && ok && right
				if ok && !right && off == last {
					t.Errorf("lazy whole pass: the last block served wrong bytes (the digest check was bypassed)")
				}
			}
			if !passOK {
				for _, off := range []int64{0, trustBlock, last} {
					if ok, right := readChecked(t, r, honest, off, trustBlock); ok && !right {
						t.Errorf("lazy read at %d after a failed pass: served wrong bytes", off)
					}
				}
			}
			if evil.Lies() == 0 {
				t.Errorf("the evil registry never lied: the case tests nothing")
			}
			r.Close()
			cache.Close()

			// Nothing wrong persisted: an honest registry over the same
			// disk tier reads the right bytes, and so does the evil one
			// from what the disk tier holds for it.
			for _, host := range []string{reg.Host, evil.Host} {
				_, hr := layerReader(t, host, dir, li, layercache.VerifyStrict)
				if ok, right := readChecked(t, hr, honest, 0, len(honest)); host == reg.Host && !ok || ok && !right {
					t.Errorf("whole read from %s over the evil mount's disk tier: ok %v, right %v; want the honest bytes", host, ok, right)
				}
			}
		})
	}
}

// A manifest whose bytes do not hash to the digest it was asked by is
// refused.
func TestEvilRegistryManifestDigest(t *testing.T) {
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	evil := registrytest.StartEvilRegistry(t, reg, registrytest.LieManifestDigest)
	c := clientOf(t, evil.Host)
	_, err := c.Resolve(context.Background(), "test/small", fx.Small.Digest.String(), registry.HostPlatform())
	if !errors.Is(err, registry.ErrDigestMismatch) {
		t.Errorf("resolve by digest from a registry lying about the manifest: got %v, want ErrDigestMismatch", err)
	}
	if evil.Lies() == 0 {
		t.Error("the evil registry never lied")
	}
}
