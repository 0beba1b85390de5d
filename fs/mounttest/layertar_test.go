package mounttest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
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

// layerTarImages are images whose layer.tar sizes are found each their own
// way: gzip and zstd by an index pass, uncompressed from the blob size,
// eStargz from its index.
var layerTarImages = []string{"test/small:latest", "test/compress:zstd", "test/compress:none", "test/compress:estargz"}

// wantLayerTars maps "<image>/layers/<id>/layer.tar" to the uncompressed
// layer's digest and size, as pushed to the registry.
func wantLayerTars(t *testing.T) map[string]wantTar {
	want := map[string]wantTar{}
	for _, ref := range layerTarImages {
		img := fixtures.Images[ref]
		if img == nil {
			t.Fatalf("no fixture %s", ref)
		}
		for i, id := range chainIDs(img.DiffIDs) {
			want[ref+"/layers/"+id+"/layer.tar"] = wantTar{img.DiffIDs[i], img.Layers[i].UncompressedSize}
		}
	}
	return want
}

// slowPassMount mounts the fixtures through a proxy that stalls the index
// pass of test/small's base layer (its second GET, after the format probe)
// for longer than layer.tar's open waits for a size (2s): a copy tool
// that trusted an open to learn the size would copy an empty file.
func slowPassMount(t *testing.T) *regfsProc {
	t.Helper()
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	l := fixtures.Small.Layers[0]
	proxy.Add(registrytest.Fault{Match: registrytest.PathContains(l.Digest.Encoded()), Every: 2, Times: 1, StallBody: 3 * time.Second})
	return startCacheMount(t, proxy.Host, t.TempDir())
}

type wantTar struct {
	diffID digest.Digest
	size   int64
}

// tarAndCheck runs tar -cf - PATHS... in mnt and checks every layer.tar in
// its output against want; all of want must be there.
func tarAndCheck(t *testing.T, mnt string, want map[string]wantTar, paths ...string) {
	t.Helper()
	cmd := exec.Command("tar", append([]string{"-cf", "-", "-C", mnt}, paths...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := 0
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading tar's output: %v", err)
		}
		w, ok := want[h.Name]
		if !ok {
			continue
		}
		seen++
		d := sha256.New()
		n, err := io.Copy(d, tr)
		if err != nil {
			t.Fatalf("%s in tar's output: %v", h.Name, err)
		}
		if got := digest.NewDigest(digest.SHA256, d); n != w.size || got != w.diffID {
			t.Errorf("tar -c: %s: got %d bytes %s, want the layer's %d uncompressed bytes %s", h.Name, n, got, w.size, w.diffID)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("tar -c: %v: %s", err, stderr.String())
	}
	if seen != len(want) {
		t.Errorf("tar -c: got %d layer.tar files, want %d", seen, len(want))
	}
}

// stat, tar -c and cp -r on a fresh mount (no layer.tar size known yet)
// see and copy every layer.tar whole: a stat gives its real size, waiting
// for the index pass if it must.
func TestLayerTarCopies(t *testing.T) {
	want := wantLayerTars(t)
	var names []string
	for name := range want {
		names = append(names, name)
	}
	t.Run("stat", func(t *testing.T) {
		p := startRegfs(t)
		for name, w := range want {
			if st, err := os.Stat(filepath.Join(p.mnt, name)); err != nil || st.Size() != w.size {
				t.Errorf("stat %s before any open: got %v, %v; want size %d", name, st, err, w.size)
			}
		}
	})
	t.Run("tar image dirs", func(t *testing.T) {
		tarAndCheck(t, startRegfs(t).mnt, want, layerTarImages...)
	})
	t.Run("tar layer.tar files, slow pass", func(t *testing.T) {
		tarAndCheck(t, slowPassMount(t).mnt, want, names...)
	})
	t.Run("cp -r, slow pass", func(t *testing.T) {
		p := slowPassMount(t)
		dst := t.TempDir()
		for _, ref := range layerTarImages {
			// The files of each layer directory but its blob (reading it
			// first would hide a slow pass) and its fs/ (a layer's own tree
			// may hold a hardlink to a file of a lower layer, which does
			// not open there).
			for _, id := range chainIDs(fixtures.Images[ref].DiffIDs) {
				from, to := filepath.Join(p.mnt, ref, "layers", id), filepath.Join(dst, ref, "layers", id)
				if err := os.MkdirAll(to, 0o755); err != nil {
					t.Fatal(err)
				}
				args := []string{"-r"}
				for _, f := range []string{"layer.tar", "digest", "json"} {
					args = append(args, filepath.Join(from, f))
				}
				if out, err := exec.Command("cp", append(args, to)...).CombinedOutput(); err != nil {
					t.Fatalf("cp -r %s/*: %v: %s", from, err, out)
				}
			}
		}
		for name, w := range want {
			path := filepath.Join(dst, name)
			st, err := os.Stat(path)
			if err != nil {
				t.Errorf("cp -r: %v", err)
				continue
			}
			if got := sha256File(t, path); st.Size() != w.size || got != w.diffID {
				t.Errorf("cp -r: %s: got %d bytes %s, want the layer's %d uncompressed bytes %s", name, st.Size(), got, w.size, w.diffID)
			}
		}
	})
}

// A layer.tar whose size needs an index pass that outlasts --timeout: the
// stat answers EIO with one log line naming the cause, never size 0; once
// the pass (which goes on) is done, the stat gives the size.
func TestLayerTarStatTimeout(t *testing.T) {
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	l := fixtures.Large.Layers[0]
	// The first GET is the format probe; the second, the pass, stalls.
	proxy.Add(registrytest.Fault{Match: registrytest.PathContains(l.Digest.Encoded()), Every: 2, Times: 1, StallBody: 8 * time.Second})
	logFile := filepath.Join(t.TempDir(), "log") // read while regfs runs (its stderr buffer is not safe to)
	p := startCacheMount(t, proxy.Host, t.TempDir(), "--block-size", "1M", "--timeout", "1s", "--log-level", "info", "--log-file", logFile)
	path := filepath.Join(p.mnt, "test/large:latest/layers", chainIDs(fixtures.Large.DiffIDs)[0], "layer.tar")
	st, err := os.Stat(path)
	if errnoOf(err) != syscall.EIO {
		t.Fatalf("stat layer.tar while its index pass stalls: got %v, %v; want EIO", st, err)
	}
	logText := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	waitFor(t, "a log line on the failed stat", func() bool { return strings.Contains(logText(), "size of layer.tar") })
	var size int64
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(path); err == nil {
			size = st.Size()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if size != l.UncompressedSize {
		t.Errorf("stat layer.tar after the pass: got size %d, want %d", size, l.UncompressedSize)
	}
	if n := strings.Count(logText(), "size of layer.tar"); n < 1 {
		t.Errorf("log lines about the stat: got %d, want at least 1:\n%s", n, logText())
	}
}

// cat of a layer.tar whose size is not known yet streams along with the
// index pass: its fstat does not wait for the pass, so its first bytes
// come while the pass is still running (here held near the blob's end).
func TestLayerTarCatStreams(t *testing.T) {
	needFUSE(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	l := fixtures.Large.Layers[0]
	proxy.Add(registrytest.Fault{Match: registrytest.PathContains(l.Digest.Encoded()), StallAt: l.Size - 64<<10, StallBody: 10 * time.Second})
	p := startCacheMount(t, proxy.Host, t.TempDir(), "--block-size", "1M")
	path := filepath.Join(p.mnt, "test/large:latest/layers", chainIDs(fixtures.Large.DiffIDs)[0], "layer.tar")
	cat := exec.Command("cat", path)
	out, err := cat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cat.Process.Kill()
		cat.Wait()
	})
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(out, first); err != nil {
		t.Fatalf("cat's first MiB: %v", err)
	}
	var st statsImages
	if err := json.Unmarshal(readFile(t, filepath.Join(p.mnt, ".regfs/stats")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Images) != 1 || len(st.Images[0].Layers) != 1 || st.Images[0].Layers[0].IndexState != "building" {
		t.Errorf("index state when cat has its first MiB: got %+v, want the pass still building", st.Images)
	}
}
