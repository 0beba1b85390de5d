package mounttest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

// The registry goes away: a mount over a cache filled by `regfs prefetch`
// starts and serves what was prefetched, by tag and by digest; what was
// not gives EIO and a log line; once the registry is back (same storage,
// same port), the failing read succeeds on the same mount.
func TestOfflineServesPrefetched(t *testing.T) {
	needFUSE(t)
	regDir := t.TempDir()
	r := registrytest.StartRegistry(t, registrytest.WithDir(regDir))
	fx := registrytest.PushFixtures(t, r, registrytest.WithoutLarge())
	cacheDir := t.TempDir()
	const ref = "test/small:latest"
	if out, err := prefetch(t, "--cache-dir", cacheDir, "--block-size", "4K", r.Host+"/"+ref); err != nil {
		t.Fatalf("prefetch: %v\n%s", err, out)
	}
	// Of the eStargz image, only /etc: its other files' chunks stay out.
	const partial = "test/compress:estargz"
	if out, err := prefetch(t, "--cache-dir", cacheDir, "--block-size", "4K", r.Host+"/"+partial, "/etc"); err != nil {
		t.Fatalf("prefetch: %v\n%s", err, out)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	logFile := filepath.Join(t.TempDir(), "regfs.log")
	p := startCacheMount(t, r.Host, cacheDir, "--log-level", "info", "--log-file", logFile)
	if log := readLog(t, logFile); !strings.Contains(log, "unreachable: serving cached content") {
		t.Errorf("start-up: got log\n%s\nwant it to say the registry is unreachable and cached content is served", log)
	}
	byDigest := "test/small@" + fx.Small.Digest.String()
	for _, name := range []string{ref, byDigest} {
		checkImageOffline(t, p.mnt, name, fx.Small)
	}
	const stale = "serving cached tag answer, registry unreachable"
	if log := readLog(t, logFile); strings.Count(log, stale) != 1 {
		t.Errorf("log: got %q %d times, want once; log:\n%s", stale, strings.Count(log, stale), log)
	}

	// Never fetched: EIO, and a line naming the cause.
	other := filepath.Join(p.mnt, "test/compress:zstd", "manifest.json")
	if _, err := os.ReadFile(other); errnoOf(err) != syscall.EIO {
		t.Errorf("read %s, never fetched, registry down: got %v, want EIO", other, err)
	}
	etc, big := estargzFiles(t, fx.EStargz)
	for path, want := range etc {
		if got, err := os.ReadFile(filepath.Join(p.mnt, partial, "rootfs", path)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s rootfs/%s, prefetched: got %d bytes, %v; want the %d bytes pushed", partial, path, len(got), err, len(want))
		}
	}
	bigPath := filepath.Join(p.mnt, partial, "rootfs", big)
	if _, err := os.ReadFile(bigPath); errnoOf(err) != syscall.EIO {
		t.Errorf("read %s, not prefetched, registry down: got %v, want EIO", bigPath, err)
	}
	if log := readLog(t, logFile); !strings.Contains(log, "connection refused") {
		t.Errorf("log after a failed read: got\n%s\nwant a line naming the cause (connection refused)", log)
	}

	// The registry is back: the same read on the same mount succeeds.
	registrytest.StartRegistry(t, registrytest.WithDir(regDir), registrytest.WithAddr(r.Host))
	got, err := os.ReadFile(other)
	if err != nil || !bytes.Equal(got, fx.Zstd.Manifest) {
		t.Errorf("read %s with the registry back: got %d bytes, %v; want the %d bytes pushed", other, len(got), err, len(fx.Zstd.Manifest))
	}
	if got, err := os.ReadFile(bigPath); err != nil || !bytes.Equal(got, fx.EStargz.RootFS()[big].Data()) {
		t.Errorf("read %s with the registry back: got %d bytes, %v; want the %d bytes pushed", bigPath, len(got), err, len(fx.EStargz.RootFS()[big].Data()))
	}
	checkImageOffline(t, p.mnt, ref, fx.Small)
	stopCacheMount(t, p)
}

// estargzFiles are the regular files under etc/ of img (path → content),
// and the path of its largest file elsewhere.
func estargzFiles(t *testing.T, img *registrytest.Image) (etc map[string][]byte, big string) {
	t.Helper()
	etc = map[string][]byte{}
	for path, e := range img.RootFS() {
		if e.Type != tar.TypeReg {
			continue
		}
		if strings.HasPrefix(path, "etc/") {
			etc[path] = e.Data()
		} else if big == "" || len(e.Data()) > len(img.RootFS()[big].Data()) {
			big = path
		}
	}
	if len(etc) == 0 || big == "" {
		t.Fatalf("eStargz fixture: %d files under etc/, largest elsewhere %q", len(etc), big)
	}
	return etc, big
}

// checkImageOffline reads name's manifest, config, every layer's blob and
// layer.tar, and every regular file of rootfs/ through the mount, and
// compares each with what was pushed.
func checkImageOffline(t *testing.T, mnt, name string, img *registrytest.Image) {
	t.Helper()
	dir := filepath.Join(mnt, name)
	for file, want := range map[string][]byte{"manifest.json": img.Manifest, "config.json": img.Config} {
		if got, err := os.ReadFile(filepath.Join(dir, file)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/%s: got %d bytes, %v; want the %d bytes pushed", name, file, len(got), err, len(want))
		}
	}
	for i, id := range chainIDs(img.DiffIDs) {
		if got := sha256File(t, filepath.Join(dir, "layers", id, "blob")); got != img.Layers[i].Digest {
			t.Errorf("%s layer %d blob: got %s, want %s", name, i+1, got, img.Layers[i].Digest)
		}
		if got := sha256File(t, filepath.Join(dir, "layers", id, "layer.tar")); got != img.DiffIDs[i] {
			t.Errorf("%s layer %d layer.tar: got %s, want %s", name, i+1, got, img.DiffIDs[i])
		}
	}
	files := 0
	for path, e := range img.RootFS() {
		if e.Type != tar.TypeReg {
			continue
		}
		files++
		got, err := os.ReadFile(filepath.Join(dir, "rootfs", path))
		if err != nil || !bytes.Equal(got, e.Data()) {
			t.Errorf("%s rootfs/%s: got %d bytes, %v; want the %d bytes pushed", name, path, len(got), err, len(e.Data()))
		}
	}
	if files == 0 {
		t.Errorf("%s: no regular file in rootfs/ to read", name)
	}
}

// A registry that goes away while a read is in flight: the reader gets EIO
// (not the socket's ECONNREFUSED), and the log names the cause.
func TestOfflineMidReadDeathIsEIO(t *testing.T) {
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	img := fixtures.Large
	// The large layer's body stops after 1 MiB, long enough to go away in.
	stall := proxy.StallBody(1<<20, time.Minute, 0, registrytest.PathContains("/blobs/"+img.Layers[0].Digest.String()))
	logFile := filepath.Join(t.TempDir(), "regfs.log")
	p := startCacheMount(t, proxy.Host, t.TempDir(), "--log-level", "info", "--log-file", logFile)
	blob := filepath.Join(p.mnt, "test/large:latest", "layers", chainIDs(img.DiffIDs)[0], "blob")
	f, err := os.Open(blob)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(f, first); err != nil {
		t.Fatalf("read the start of %s: %v", blob, err)
	}
	done := make(chan error, 1)
	go func() {
		h := sha256.New()
		h.Write(first)
		_, err := io.Copy(h, f)
		if err == nil && digest.NewDigest(digest.SHA256, h) != img.Layers[0].Digest {
			t.Errorf("read %s: got other bytes than the blob's", blob)
		}
		done <- err
	}()
	waitFor(t, "the blob's body to stall", func() bool { return stall.Hits() > 0 })
	select {
	case err := <-done:
		t.Fatalf("read of %s ended before the registry went away: %v", blob, err)
	case <-time.After(200 * time.Millisecond): // the reader is blocked in the stall
	}
	if err := proxy.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if errnoOf(err) != syscall.EIO {
			t.Errorf("read of %s while the registry went away: got %v, want EIO", blob, err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("read did not end after the registry went away")
	}
	if log := readLog(t, logFile); !strings.Contains(log, "connection refused") {
		t.Errorf("log after the failed read: got\n%s\nwant a line naming the cause (connection refused)", log)
	}
}

// Without a disk cache: what a running mount read stays readable by tag
// after the registry goes away and the tag's TTL has passed (the tag
// answer from memory, the bytes from the memory block cache).
func TestOfflineMemoryOnly(t *testing.T) {
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	logFile := filepath.Join(t.TempDir(), "regfs.log")
	p := startCacheMount(t, proxy.Host, "", "--tag-ttl", "1s", "--log-level", "info", "--log-file", logFile)
	const ref = "test/small:latest"
	checkImageOffline(t, p.mnt, ref, fixtures.Small)
	if err := proxy.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the tag TTL: the kernel and regfs ask again
	checkImageOffline(t, p.mnt, ref, fixtures.Small)
	if log := readLog(t, logFile); !strings.Contains(log, "serving cached tag answer, registry unreachable") {
		t.Errorf("log: got\n%s\nwant the tag answer served stale", log)
	}
	stopCacheMount(t, p)
}

// A registry that cannot be reached, and nothing recorded from it: the
// mount fails as before (a mistyped host must not mount an empty tree).
func TestOfflineStartNeedsRecords(t *testing.T) {
	needFUSE(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	mnt := t.TempDir()
	t.Cleanup(func() { forceUnmount(mnt) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, regfsBin, "mount", "--cache-dir", t.TempDir(), host, mnt).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection refused") {
		t.Errorf("regfs mount of an unreachable registry, empty cache: got %v, output %q; want a failure naming the cause", err, out)
	}
	if isFUSEMount(mnt) {
		t.Errorf("regfs mount of an unreachable registry left a mount on %s", mnt)
	}
}

// readLog is what a running regfs has written to its --log-file so far
// (read from the file: its stderr buffer is written by another goroutine).
func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("regfs log: %v", err)
	}
	return string(b)
}
