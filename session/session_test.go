package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// smallImage pushes the fixtures and resolves test/small:latest.
func smallImage(t *testing.T) (registry.Client, *registry.Image, *registrytest.Fixtures) {
	t.Helper()
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	ctx := context.Background()
	c, err := registry.New(ctx, reg.Host, registry.Options{API: registry.APIAuto, PlainHTTP: true, Logger: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Resolve(ctx, "test/small", "latest", registry.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	return c, img, fx
}

func newCache(t *testing.T, blockSize int64) *layercache.Cache {
	t.Helper()
	c, err := layercache.New(layercache.Options{BlockSize: blockSize, MemoryBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestNewReadSize(t *testing.T) {
	client, _, _ := smallImage(t)
	cache := newCache(t, 16<<10)
	if _, err := New(Options{Client: client, Cache: cache, Index: layerindex.Options{ReadSize: 32 << 10}}); err == nil {
		t.Error("New with an index read size unlike the block size: got no error")
	}
	if _, err := New(Options{Client: client, Cache: cache, Index: layerindex.Options{ReadSize: 16 << 10}}); err != nil {
		t.Errorf("New with the block size as index read size: %v", err)
	}
	if _, err := New(Options{Cache: cache}); err == nil {
		t.Error("New without a client: got no error")
	}
}

func TestLayerAndImage(t *testing.T) {
	ctx := context.Background()
	client, img, fx := smallImage(t)
	s, err := New(Options{Client: client, Cache: newCache(t, 16<<10)})
	if err != nil {
		t.Fatal(err)
	}
	l0 := s.Layer(img.Repository, img.Layers[0])
	if again := s.Layer(img.Repository, img.Layers[0]); again != l0 {
		t.Error("Layer twice for one layer: got two handles, want one")
	}
	im := s.Image("small", img)
	if again := s.Image("small", img); again != im {
		t.Error("Image twice for one key: got two handles, want one")
	}
	if im.Layers()[0] != l0 {
		t.Error("Image.Layers()[0]: got another handle than Session.Layer's")
	}

	r, err := l0.Reader(ctx, layercache.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, r.Size())
	if n, err := r.ReadAt(ctx, got, 0); n != len(got) || err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read blob: got %d bytes, %v", n, err)
	}
	if want := fx.Small.Layers[0].Blob; !bytes.Equal(got, want) {
		t.Errorf("blob through the cache: got %d bytes, want the pushed %d", len(got), len(want))
	}

	m, err := im.Rootfs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.Lookup("etc/hostname"); !ok || e.Layer != 1 {
		t.Errorf("rootfs etc/hostname: got layer %d (found %v), want layer 1", e.Layer, ok)
	}
	if _, ok := m.Lookup("etc/old.conf"); ok {
		t.Error("rootfs etc/old.conf: found, want whited out")
	}
	if m2, _ := im.Rootfs(ctx); m2 != m {
		t.Error("Rootfs twice: got two trees, want one")
	}
	if l0.OpenedIndex() == nil {
		t.Error("OpenedIndex after Rootfs: got nil")
	}
}

func TestNoCache(t *testing.T) {
	ctx := context.Background()
	client, img, _ := smallImage(t)
	s, err := New(Options{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Layer(img.Repository, img.Layers[0])
	if _, err := l.Reader(ctx, layercache.OpenOptions{}); !errors.Is(err, ErrNoCache) {
		t.Errorf("Reader without a cache: got %v, want ErrNoCache", err)
	}
	if l.OpenedIndex() != nil {
		t.Error("OpenedIndex before Index: got an index")
	}
	ix, err := l.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Index(ctx); err != nil {
		t.Errorf("index read from the registry directly: %v", err)
	}
}
