package mounttest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	regfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
	"github.com/regfs/regfs/session"
)

// Shared by every test: one registry with the fixtures pushed, the regfs
// binary built once.
var (
	reg      *registrytest.Registry
	fixtures *registrytest.Fixtures
	regfsBin string
	skipWhy  string
)

const largeSize = 24 << 20

func TestMain(m *testing.M) {
	// The tests read their own mount: the FUSE server needs threads of its
	// own (see go-fuse's deadlock notes).
	if runtime.GOMAXPROCS(0) < 4 {
		runtime.GOMAXPROCS(4)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	skipWhy = fuseUnusable()
	if skipWhy != "" {
		return m.Run()
	}
	ctx := context.Background()
	var err error
	reg, err = registrytest.Start(ctx, registrytest.Config{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start registry: %v\n", err)
		return 1
	}
	defer reg.Close()
	fixtures, err = registrytest.PushFixturesTo(ctx, registrytest.NewPusher(reg), reg.Host, registrytest.WithLargeSize(largeSize))
	if err != nil {
		fmt.Fprintf(os.Stderr, "push fixtures: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "regfs-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	regfsBin = filepath.Join(dir, "regfs")
	if out, err := exec.Command("go", "build", "-o", regfsBin, "github.com/regfs/regfs/cmd/regfs").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build regfs: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func fuseUnusable() string {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "no /dev/fuse"
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and no fusermount3"
		}
	}
	return ""
}

func needFUSE(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skipf("FUSE unusable: %s", skipWhy)
	}
}

type mountOpts struct {
	api       string
	platform  registry.Platform
	tagTTL    time.Duration
	debug     bool // go-fuse logs every request to the standard logger
	pageSize  int  // catalog and tag list page size asked for (default the client's)
	published bool // look for published layer indexes (--published-indexes auto)
}

// mount mounts host in this process on a fresh directory and unmounts it in
// t.Cleanup, even when the test fails.
func mount(t *testing.T, host string, o mountOpts) string {
	t.Helper()
	needFUSE(t)
	dir, unmount := mountFor(t, host, o)
	t.Cleanup(unmount)
	return dir
}

// mountFor mounts host and returns the unmount function (safe to call
// more than once); the caller must call it.
func mountFor(t testing.TB, host string, o mountOpts) (string, func()) {
	t.Helper()
	ctx := context.Background()
	if o.api == "" {
		o.api = registry.APIV2
	}
	if o.platform.OS == "" {
		o.platform = registry.Platform{OS: "linux", Architecture: "amd64"}
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	client, err := registry.New(ctx, host, registry.Options{API: o.api, PlainHTTP: true, PageSize: o.pageSize, Logger: logrus.NewEntry(log)})
	if err != nil {
		t.Fatalf("registry client: %v", err)
	}
	cache, err := layercache.New(layercache.Options{MemoryBytes: 64 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := session.New(session.Options{Client: client, Cache: cache, DetachIndexBuilds: true, PublishedIndexes: o.published})
	if err != nil {
		t.Fatal(err)
	}
	root, err := regfs.NewRoot(regfs.Options{
		Session: sess, Platform: o.platform,
		TagTTL: o.tagTTL, OpTimeout: 30 * time.Second, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	server, err := root.Mount(dir, regfs.MountConfig{Debug: o.debug || os.Getenv("REGFS_FUSE_DEBUG") != ""})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	var once sync.Once
	return dir, func() {
		once.Do(func() {
			var err error
			for i := 0; i < 20; i++ {
				if err = server.Unmount(); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("unmount %s: %v", dir, err)
				syscall.Unmount(dir, syscall.MNT_DETACH)
			}
			server.Wait()
			cache.Close()
		})
	}
}

func sha256File(t *testing.T, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// isFUSEMount reports whether dir is (still) a FUSE mount.
func isFUSEMount(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == 0x65735546
}

// chainIDs are the layer IDs regfs shows for a v2 image: the hex of each
// layer's OCI ChainID, base first.
func chainIDs(diffIDs []digest.Digest) []string {
	var ids []string
	var chain digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			chain = d
		} else {
			chain = digest.FromString(chain.String() + " " + d.String())
		}
		ids = append(ids, chain.Encoded())
	}
	return ids
}
