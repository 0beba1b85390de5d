package session

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/metastore"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

// logBuffer is a logger whose output a test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// offlineSession wires a client of host over store, as cmd/regfs does, with
// fast retries.
func offlineSession(t *testing.T, host string, store *metastore.Store, logs *logBuffer) *Session {
	t.Helper()
	log := logrus.New()
	log.SetOutput(logs)
	log.SetLevel(logrus.InfoLevel)
	c, err := registry.New(context.Background(), host, registry.Options{
		API: registry.APIV2, PlainHTTP: true, Keychain: authn.NewMultiKeychain(),
		RetryBackoffMin: time.Millisecond, RetryBackoffMax: 5 * time.Millisecond,
		Logger: logrus.NewEntry(log), Content: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Client: c, Meta: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const staleTag = "serving cached tag answer, registry unreachable"

// A session over a store that saw an image answers its tag, the tag list
// and the catalog with the registry gone, says so once, and is fresh again
// as soon as the registry is back.
func TestOfflineAnswers(t *testing.T) {
	ctx := context.Background()
	amd64 := registry.Platform{OS: "linux", Architecture: "amd64"}
	regDir := t.TempDir()
	reg := registrytest.StartRegistry(t, registrytest.WithDir(regDir))
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	store, err := metastore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	online := offlineSession(t, reg.Host, store, &logs)
	if _, err := online.Client().Resolve(ctx, registrytest.RepoSmall, "latest", amd64); err != nil {
		t.Fatal(err)
	}
	if _, err := online.Client().Resolve(ctx, registrytest.RepoSmall, fx.SmallDocker.Digest.String(), amd64); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}

	// A new session over the same store: a later mount.
	s := offlineSession(t, reg.Host, store, &logs)
	c := s.Client()
	for i := 0; i < 2; i++ {
		img, err := c.Resolve(ctx, registrytest.RepoSmall, "latest", amd64)
		if err != nil {
			t.Fatalf("Resolve(small:latest) offline: %v", err)
		}
		if img.ManifestDigest != fx.Small.Digest || img.Reference != "latest" || len(img.Layers) != len(fx.Small.Layers) {
			t.Errorf("Resolve(small:latest) offline: got %s (reference %q, %d layers), want %s, \"latest\", %d layers",
				img.ManifestDigest, img.Reference, len(img.Layers), fx.Small.Digest, len(fx.Small.Layers))
		}
	}
	if n := logs.count(staleTag); n != 1 {
		t.Errorf("log: got %q %d times, want once; log:\n%s", staleTag, n, logs.String())
	}
	if img, err := c.Resolve(ctx, registrytest.RepoSmall, fx.SmallDocker.Digest.String(), amd64); err != nil || img.ManifestDigest != fx.SmallDocker.Digest {
		t.Errorf("Resolve(small@digest) offline: got %v", err)
	}
	if tags, err := c.Tags(ctx, registrytest.RepoSmall); err != nil || !reflect.DeepEqual(tags, []string{"latest"}) {
		t.Errorf("Tags(small) offline: got %q, %v; want the recorded [latest]", tags, err)
	}
	if repos, err := c.Catalog(ctx); err != nil || !reflect.DeepEqual(repos, []string{registrytest.RepoSmall}) {
		t.Errorf("Catalog offline: got %q, %v; want the recorded [%s]", repos, err, registrytest.RepoSmall)
	}
	if _, err := c.Resolve(ctx, registrytest.RepoSmall, "docker", amd64); !registry.IsUnreachable(err) {
		t.Errorf("Resolve(small:docker), never answered before, offline: got %v, want the registry's unreachable error", err)
	}
	if _, err := c.Tags(ctx, registrytest.RepoDeep); !registry.IsUnreachable(err) {
		t.Errorf("Tags of a repository never seen, offline: got %v, want the registry's unreachable error", err)
	}

	// The registry is back, same storage and port: answers are fresh.
	registrytest.StartRegistry(t, registrytest.WithDir(regDir), registrytest.WithAddr(reg.Host))
	img, err := c.Resolve(ctx, registrytest.RepoSmall, "docker", amd64)
	if err != nil || img.ManifestDigest != fx.SmallDocker.Digest {
		t.Fatalf("Resolve(small:docker) with the registry back: got %v", err)
	}
	tags, err := c.Tags(ctx, registrytest.RepoSmall)
	if err != nil || !reflect.DeepEqual(tags, fx.Tags(registrytest.RepoSmall)) {
		t.Errorf("Tags(small) with the registry back: got %q, %v; want %q", tags, err, fx.Tags(registrytest.RepoSmall))
	}
	if n := logs.count("registry reachable again"); n != 1 {
		t.Errorf("log: got \"registry reachable again\" %d times, want once; log:\n%s", n, logs.String())
	}
}

// A registry that accepts connections and never answers gets a share of the
// caller's time; the recorded tag answer is served within the rest.
func TestOfflineBlackHole(t *testing.T) {
	ctx := context.Background()
	amd64 := registry.Platform{OS: "linux", Architecture: "amd64"}
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	store, err := metastore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	if _, err := offlineSession(t, reg.Host, store, &logs).Client().Resolve(ctx, registrytest.RepoSmall, "latest", amd64); err != nil {
		t.Fatal(err)
	}

	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	// The same content, as the black hole's answer from before.
	store.PutRef(metastore.Ref{Registry: hole.Addr().String(), Repository: registrytest.RepoSmall, Tag: "latest", Digest: fx.Small.Digest, Time: time.Now()})
	s := offlineSession(t, hole.Addr().String(), store, &logs)
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	img, err := s.Client().Resolve(tctx, registrytest.RepoSmall, "latest", amd64)
	if err != nil || img.ManifestDigest != fx.Small.Digest {
		t.Fatalf("Resolve(small:latest) from a registry that never answers: got %v, want the recorded %s", err, fx.Small.Digest)
	}
}
