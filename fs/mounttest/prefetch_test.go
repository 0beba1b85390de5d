package mounttest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/registry/registrytest"
)

// prefetch runs `regfs prefetch ARGS...` and returns its stderr.
func prefetch(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, regfsBin, append([]string{"prefetch"}, args...)...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// layerBlobRequests counts the requests reg logged for img's layer blobs.
func layerBlobRequests(r *registrytest.Registry, img *registrytest.Image) int {
	return r.CountRequests(func(q registrytest.Request) bool {
		for _, l := range img.Layers {
			if strings.HasSuffix(q.Path, "/blobs/"+l.Digest.String()) {
				return true
			}
		}
		return false
	})
}

// layerBlobBytes is what reg has served of img's layer blobs so far.
func layerBlobBytes(r *registrytest.Registry, img *registrytest.Image) int64 {
	var n int64
	for _, q := range r.Requests() {
		for _, l := range img.Layers {
			if strings.HasSuffix(q.Path, "/blobs/"+l.Digest.String()) {
				n += q.Bytes
			}
		}
	}
	return n
}

// blobBytes is what reg has served of blob bodies so far.
func blobBytes(r *registrytest.Registry) int64 { return r.Stats().BlobBytesServed }

func imageBlobSize(img *registrytest.Image) int64 {
	var n int64
	for _, l := range img.Layers {
		n += l.Size
	}
	return n
}

// readImageThroughMount reads, through the mount, every layer's blob and
// layer.tar (checking them against the digest and diff_id) and every
// regular file of rootfs/; it returns the number of rootfs files read.
func readImageThroughMount(t *testing.T, mnt, ref string, img *registrytest.Image) int {
	t.Helper()
	dir := filepath.Join(mnt, ref)
	for i, id := range chainIDs(img.DiffIDs) {
		if got := sha256File(t, filepath.Join(dir, "layers", id, "blob")); got != img.Layers[i].Digest {
			t.Errorf("%s layer %d blob: got %s, want %s", ref, i+1, got, img.Layers[i].Digest)
		}
		if got := sha256File(t, filepath.Join(dir, "layers", id, "layer.tar")); got != img.DiffIDs[i] {
			t.Errorf("%s layer %d layer.tar: got %s, want %s", ref, i+1, got, img.DiffIDs[i])
		}
	}
	files := 0
	err := filepath.WalkDir(filepath.Join(dir, "rootfs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Errorf("%s: walk rootfs: %v", ref, err)
	}
	return files
}

func TestPrefetchThenMountFetchesNoLayerBytes(t *testing.T) {
	needFUSE(t)
	for _, tc := range []struct {
		ref string
		img *registrytest.Image
	}{
		{"test/small:latest", fixtures.Small},
		{"test/compress:zstd", fixtures.Zstd},
		{"test/compress:none", fixtures.Plain},
		{"test/compress:estargz", fixtures.EStargz},
		{"test/large:latest", fixtures.Large},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			cacheDir := t.TempDir()
			before, bytes0 := layerBlobRequests(reg, tc.img), blobBytes(reg)
			stderr, err := prefetch(t, "--cache-dir", cacheDir, reg.Host+"/"+tc.ref)
			if err != nil {
				t.Fatalf("regfs prefetch: %v; stderr:\n%s", err, stderr)
			}
			if !strings.Contains(stderr, "prefetched "+reg.Host+"/"+tc.ref) {
				t.Errorf("stderr: got %q, want a closing line naming %s", stderr, tc.ref)
			}
			// Every layer blob once. The server counts what it wrote to the
			// socket, so a stream the cache stopped early may count some
			// buffered bytes the client never read: allow a little.
			if got, want := blobBytes(reg)-bytes0, imageBlobSize(tc.img); got < want || float64(got) > 1.25*float64(want)+float64(len(tc.img.Config)) {
				t.Errorf("blob bytes served for the prefetch: got %d, want %d (+ the config's %d), at most 25 %% more", got, want, len(tc.img.Config))
			} else if got > want+int64(len(tc.img.Config)) {
				t.Logf("blob bytes served for the prefetch: %d, %.1f %% more than the image's %d", got, 100*(float64(got)/float64(want)-1), want)
			}
			if layerBlobRequests(reg, tc.img) == before {
				t.Fatalf("prefetch made no layer blob request")
			}

			p := startRegfs(t, "--cache-dir", cacheDir)
			before = layerBlobRequests(reg, tc.img)
			files := readImageThroughMount(t, p.mnt, tc.ref, tc.img)
			if files == 0 {
				t.Errorf("rootfs of %s: no regular file read", tc.ref)
			}
			if got := layerBlobRequests(reg, tc.img) - before; got != 0 {
				t.Errorf("layer blob requests while reading %d blobs, their layer.tar and %d rootfs files after a prefetch: got %d, want 0",
					len(tc.img.Layers), files, got)
			}
		})
	}
}

// pushEStargzImage pushes one eStargz layer of LargeEntries(seed, size) as
// repo:latest and returns it.
func pushEStargzImage(t *testing.T, repo string, size int64) *registrytest.Image {
	t.Helper()
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: registrytest.LargeEntries(7, size), Compression: registrytest.EStargz})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(reg).PushImage(context.Background(), repo, img, "latest"); err != nil {
		t.Fatal(err)
	}
	return img
}

// smallFile is the first regular file of 1 to 32 KiB in l.
func smallFile(t *testing.T, l *registrytest.Layer) registrytest.Entry {
	t.Helper()
	for _, e := range l.Entries {
		if e.Type == tar.TypeReg && e.Size() > 1<<10 && e.Size() < 32<<10 {
			return e
		}
	}
	t.Fatal("no small file in the layer")
	return registrytest.Entry{}
}

func TestPrefetchPathsFetchesLess(t *testing.T) {
	needFUSE(t)
	img := pushEStargzImage(t, "test/prefetch-paths", 8<<20)
	small := smallFile(t, img.Layers[0])
	ref := reg.Host + "/test/prefetch-paths:latest"
	for _, tc := range []struct {
		name     string
		paths    []string
		maxShare float64 // of the image's blob bytes
	}{
		{"one small file", []string{"/" + small.Name}, 0.1},
		{"a symlink to a big file", []string{"data/latest"}, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bytes0 := blobBytes(reg)
			stderr, err := prefetch(t, append([]string{"--cache-dir", t.TempDir(), "--block-size", "64K", ref}, tc.paths...)...)
			if err != nil {
				t.Fatalf("regfs prefetch: %v; stderr:\n%s", err, stderr)
			}
			got, image := blobBytes(reg)-bytes0, imageBlobSize(img)
			t.Logf("prefetch %v: %d blob bytes of %d (%.1f %%)", tc.paths, got, image, 100*float64(got)/float64(image))
			if got == 0 || float64(got) > tc.maxShare*float64(image) {
				t.Errorf("blob bytes fetched for %v: got %d, want more than 0 and at most %.0f %% of the image's %d", tc.paths, got, 100*tc.maxShare, image)
			}
		})
	}
}

// A PATH prefetch of a gzip image pulls what the index needs (all of it)
// and the file; a mount then reads the file, through a symlink, offline.
func TestPrefetchPathsThenMount(t *testing.T) {
	needFUSE(t)
	sz := pushEStargzImage(t, "test/prefetch-paths-mount", 4<<20)
	small := smallFile(t, sz.Layers[0])
	for _, tc := range []struct {
		name, ref, path, read string
		img                   *registrytest.Image
		want                  []byte
	}{
		// usr/bin/tool → /bin/tool, which in the mount would name the host's.
		{"gzip, through a symlink", "test/small:latest", "/usr/bin/tool", "bin/tool", fixtures.Small, []byte("#!/bin/sh\necho tool v3\n")},
		// Chunks are read exactly on a mount; a prefetch keeps whole blocks.
		{"eStargz, a small file", "test/prefetch-paths-mount:latest", "/" + small.Name, small.Name, sz, small.Data()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cacheDir := t.TempDir()
			if stderr, err := prefetch(t, "--cache-dir", cacheDir, reg.Host+"/"+tc.ref, tc.path); err != nil {
				t.Fatalf("regfs prefetch: %v; stderr:\n%s", err, stderr)
			}
			p := startRegfs(t, "--cache-dir", cacheDir)
			before := layerBlobRequests(reg, tc.img)
			if got := readFile(t, filepath.Join(p.mnt, tc.ref, "rootfs", tc.read)); !bytes.Equal(got, tc.want) {
				t.Errorf("rootfs/%s: got %d bytes %.40q, want %d bytes %.40q", tc.read, len(got), got, len(tc.want), tc.want)
			}
			if got := layerBlobRequests(reg, tc.img) - before; got != 0 {
				t.Errorf("layer blob requests reading a prefetched file: got %d, want 0", got)
			}
		})
	}
}

func TestPrefetchErrors(t *testing.T) {
	needFUSE(t)
	authReg := registrytest.StartRegistry(t, registrytest.WithHtpasswd("alice", "secret"), registrytest.WithInMemoryStorage())
	registrytest.PushFixtures(t, authReg, registrytest.WithoutLarge())
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the message
	}{
		{"unknown tag", []string{reg.Host + "/test/small:no-such-tag"}, []string{"no image " + reg.Host + "/test/small:no-such-tag", "404"}},
		{"unknown repository", []string{reg.Host + "/test/nothing:latest"}, []string{"no image " + reg.Host + "/test/nothing:latest", "404"}},
		{"bad reference", []string{reg.Host + "/Test/Upper:latest"}, []string{"invalid reference", "lower case"}},
		{"missing path", []string{reg.Host + "/test/small:latest", "/etc/nothing-here"}, []string{`"/etc/nothing-here"`, "file does not exist"}},
		{"path through a file", []string{reg.Host + "/test/small:latest", "/etc/hostname/x"}, []string{`"/etc/hostname/x"`, "not a directory"}},
		{"no platform", []string{"--platform", "windows/amd64", reg.Host + "/test/multi:latest"}, []string{"windows/amd64", "linux/arm64/v8"}},
		{"no cache dir", []string{"--cache-dir", "", reg.Host + "/test/small:latest"}, []string{"--cache-dir"}},
		{"bad block size", []string{"--block-size", "0", reg.Host + "/test/small:latest"}, []string{"--block-size"}},
		{"no parallel fetches", []string{"--parallel-fetches", "0", reg.Host + "/test/small:latest"}, []string{"--parallel-fetches 0", "at least 1"}},
		{"checkpoint spacing too small", []string{"--checkpoint-spacing", "4K", reg.Host + "/test/small:latest"}, []string{"--checkpoint-spacing 4K", "at least 128.0 KiB"}},
		{"disk cache too small", []string{"--disk-cache-size", "1K", reg.Host + "/test/small:latest"}, []string{"--disk-cache-size"}},
		{"auth refused", []string{authReg.Host + "/test/small:latest"}, []string{"test/small:latest", "refused access", "401"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.name != "no cache dir" {
				args = append([]string{"--cache-dir", t.TempDir()}, args...)
			}
			stderr, err := prefetch(t, args...)
			if err == nil {
				t.Fatalf("regfs prefetch %v: got exit 0, want a failure; stderr:\n%s", tc.args, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("regfs prefetch %v: got stderr %q, want it to mention %q", tc.args, stderr, w)
				}
			}
		})
	}
}

func TestPrefetchResumesDroppedConnections(t *testing.T) {
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	cut := proxy.CutBody(300<<10, 3, registrytest.BlobGETs)
	cacheDir := t.TempDir()
	ref := "test/large:latest"
	stderr, err := prefetch(t, "--cache-dir", cacheDir, proxy.Host+"/"+ref)
	if err != nil {
		t.Fatalf("regfs prefetch through a proxy dropping connections: %v; stderr:\n%s", err, stderr)
	}
	if cut.Hits() != 3 {
		t.Errorf("connections cut mid-blob: got %d, want 3", cut.Hits())
	}
	// What was cached is right, and complete.
	p := startRegfs(t, "--cache-dir", cacheDir)
	before := layerBlobRequests(reg, fixtures.Large)
	readImageThroughMount(t, p.mnt, ref, fixtures.Large)
	if got := layerBlobRequests(reg, fixtures.Large) - before; got != 0 {
		t.Errorf("layer blob requests after a resumed prefetch: got %d, want 0", got)
	}

	t.Run("down for good", func(t *testing.T) {
		proxy.FailStatus(http.StatusServiceUnavailable, "", 0, registrytest.PathContains(fixtures.Small.Layers[0].Digest.String()))
		stderr, err := prefetch(t, "--cache-dir", t.TempDir(), proxy.Host+"/test/small:latest")
		if err == nil {
			t.Fatalf("regfs prefetch with every blob GET failing: got exit 0; stderr:\n%s", stderr)
		}
		if !strings.Contains(stderr, "503") || !strings.Contains(stderr, "layer 1/3") {
			t.Errorf("stderr: got %q, want the 503 and the layer", stderr)
		}
	})
}

// BenchmarkPrefetchLarge compares `regfs prefetch` of test/large (pull
// into a fresh disk cache, check the digest, build and persist the index)
// with one plain GET of its blob, in the same run.
func BenchmarkPrefetchLarge(b *testing.B) {
	if skipWhy != "" {
		b.Skip(skipWhy)
	}
	l := fixtures.Large.Layers[0]
	blobURL := reg.URL + "/v2/test/large/blobs/" + l.Digest.String()
	var get, pf time.Duration
	var fetched int64
	var once sync.Once
	for b.Loop() {
		t0 := time.Now()
		resp, err := http.Get(blobURL)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != l.Size || digest.NewDigest(digest.SHA256, h) != l.Digest {
			b.Fatalf("GET blob: %d bytes, %v", n, err)
		}
		get += time.Since(t0)

		dir := b.TempDir()
		bytes0 := blobBytes(reg)
		t0 = time.Now()
		stderr, err := prefetch(b, "--cache-dir", dir, reg.Host+"/test/large:latest")
		if err != nil {
			b.Fatalf("prefetch: %v\n%s", err, stderr)
		}
		pf += time.Since(t0)
		fetched += blobBytes(reg) - bytes0
		once.Do(func() { b.Logf("prefetch stderr:\n%s", stderr) })
		os.RemoveAll(dir)
	}
	mb := float64(l.Size) / (1 << 20)
	b.ReportMetric(mb/(get.Seconds()/float64(b.N)), "get-MiB/s")
	b.ReportMetric(mb/(pf.Seconds()/float64(b.N)), "prefetch-MiB/s")
	b.ReportMetric(get.Seconds()/pf.Seconds(), "prefetch/get")
	b.ReportMetric(float64(fetched)/float64(b.N)/float64(l.Size), "fetched/blob")
}

// openPTY returns a pseudo-terminal pair, 100 columns wide.
func openPTY() (master, tty *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*os.File, *os.File, error) {
		master.Close()
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fail(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		return fail(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 100}); err != nil {
		tty.Close()
		return fail(err)
	}
	return master, tty, nil
}

// On a terminal, prefetch draws a bar (bytes, rate, ETA) in place.
func TestPrefetchProgressBarOnTerminal(t *testing.T) {
	needFUSE(t)
	master, tty, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	// Slow the pull down so the bar is drawn a few times.
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	proxy.StallBody(1<<20, time.Second, 1, registrytest.PathContains(fixtures.Large.Layers[0].Digest.String()))
	cmd := exec.Command(regfsBin, "prefetch", "--cache-dir", t.TempDir(), proxy.Host+"/test/large:latest")
	cmd.Stderr = tty
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, master) // ends with EIO once the child and tty are closed
		close(copied)
	}()
	err = cmd.Run()
	tty.Close()
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Fatal("terminal output did not end")
	}
	if err != nil {
		t.Fatalf("regfs prefetch on a terminal: %v; output:\n%q", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"\r", "layer 1/1 sha256:", " [", "] ", " / 16.", "MiB/s", "ETA", "\x1b[K", "prefetched "} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output: got %q, want it to contain %q", got, want)
		}
	}
	for _, line := range strings.Split(strings.ReplaceAll(got, "\r", "\n"), "\n") {
		if line = strings.ReplaceAll(line, "\x1b[K", ""); strings.Contains(line, " [") && len(line) >= 100 {
			t.Errorf("bar is %d wide, want less than the terminal's 100: %q", len(line), line)
		}
	}
}

// A second prefetch into the same cache fetches no layer bytes, over the
// v1 API too (its blobs are keyed by image ID, not digest).
func TestPrefetchAgainFetchesNothing(t *testing.T) {
	needFUSE(t)
	srv := registrytest.StartV1Server(t)
	imgs, err := srv.AddImage("test/oldimg", "latest",
		registrytest.V1LayerSpec{Tar: gzipBytes(t, tarBytes(t, registrytest.Dir("etc"), registrytest.File("etc/os-release", "NAME=v1\n")))},
		registrytest.V1LayerSpec{Tar: tarBytes(t, registrytest.File("hello", "hello from v1\n"))})
	if err != nil {
		t.Fatal(err)
	}
	var v1Size int64
	for _, im := range imgs {
		v1Size += int64(len(im.Layer))
	}
	for _, tc := range []struct {
		name   string
		args   []string
		served func() int64 // layer bytes served so far
		want   int64        // by the first prefetch
	}{
		{"v2", []string{reg.Host + "/test/small:latest"}, func() int64 { return layerBlobBytes(reg, fixtures.Small) }, imageBlobSize(fixtures.Small)},
		{"v1", []string{"--api", "v1", srv.Host + "/test/oldimg:latest"}, srv.LayerBytesServed, v1Size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--cache-dir", t.TempDir()}, tc.args...)
			for i, want := range []int64{tc.want, 0} {
				before := tc.served()
				stderr, err := prefetch(t, args...)
				if err != nil {
					t.Fatalf("prefetch %d: %v; stderr:\n%s", i+1, err, stderr)
				}
				if got := tc.served() - before; got != want {
					t.Errorf("prefetch %d: got %d layer bytes served, want %d; stderr:\n%s", i+1, got, want, stderr)
				}
				if i == 1 && !strings.Contains(stderr, "already cached") {
					t.Errorf("second prefetch: got stderr %q, want layers reported already cached", stderr)
				}
			}
		})
	}
}
