package mounttest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regfs/regfs/registry/registrytest"
)

// publishedImage pushes a one-layer gzip image of about 10 MiB of small
// files (several checkpoints apart) to r and returns the layer and its
// entries.
func publishedImage(t *testing.T, r *registrytest.Registry, repo, tag string) (*registrytest.Layer, []registrytest.Entry) {
	t.Helper()
	entries := []registrytest.Entry{registrytest.Dir("srv")}
	for i := 0; i < 4000; i++ {
		if i%100 == 0 {
			entries = append(entries, registrytest.Dir(fmt.Sprintf("srv/d%02d", i/100)))
		}
		entries = append(entries, registrytest.GeneratedFile(fmt.Sprintf("srv/d%02d/f%04d", i/100, i), int64(1024+(i*997)%3072), uint64(i+1), i%10 < 7))
	}
	layer, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.NewPusher(r).PushImage(context.Background(), repo, img, tag); err != nil {
		t.Fatal(err)
	}
	return layer, entries
}

// indexPush runs `regfs index push` of host/ref with a cache dir of its own.
func indexPush(t *testing.T, host, ref string) string {
	t.Helper()
	out, err := exec.Command(regfsBin, "index", "push", "--cache-dir", t.TempDir(), host+"/"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("regfs index push %s/%s: %v: %s", host, ref, err, out)
	}
	return string(out)
}

// blobBytesServed sums the bytes r served of blob digest in requests
// made since request number from.
func blobBytesServed(r *registrytest.Registry, from int, digest string) (n int64, requests int) {
	for _, q := range r.Requests()[from:] {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+digest) {
			n += q.Bytes
			requests++
		}
	}
	return n, requests
}

// A layer index pushed by `regfs index push` serves a fresh machine (an
// empty cache dir): the first read of a small file fetches a small part of
// the layer and no index pass runs; the bytes are the file's. Both ways of
// publishing: the referrers tag schema on the reference registry, and the
// referrers API of a front that has one.
func TestPublishedIndexFirstRead(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t)
	front := registrytest.StartReferrersFront(t, r)
	for _, tc := range []struct {
		name, host, repo, how string
	}{
		{"tag schema", r.Host, "test/pub-tag", "referrers tag sha256-"},
		{"referrers API", front.Host, "test/pub-api", "referrers API"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer, entries := publishedImage(t, r, tc.repo, "v1")
			if out := indexPush(t, tc.host, tc.repo+":v1"); !strings.Contains(out, tc.how) {
				t.Fatalf("regfs index push: got %q, want it pushed via the %s", out, tc.how)
			}
			target := entries[len(entries)-1]
			p := startCacheMount(t, tc.host, t.TempDir(), "--block-size", "64K")
			rootfs := filepath.Join(p.mnt, tc.repo+":v1", "rootfs")
			from := len(r.Requests())
			if got := readFile(t, filepath.Join(rootfs, target.Name)); !bytes.Equal(got, target.Data()) {
				t.Fatalf("%s: got %d bytes, want the layer's %d", target.Name, len(got), target.Size())
			}
			n, reqs := blobBytesServed(r, from, layer.Digest.String())
			t.Logf("first read of %s: %d bytes of the %d-byte layer in %d requests", target.Name, n, layer.Size, reqs)
			if n > layer.Size/4 {
				t.Errorf("first read of %s fetched %d bytes of the %d-byte layer: want a small part (no index pass)", target.Name, n, layer.Size)
			}
			stats, err := os.ReadFile(filepath.Join(p.mnt, ".regfs", "stats"))
			if err != nil || !bytes.Contains(stats, []byte(`"published"`)) {
				t.Errorf(".regfs/stats: want the layer's index state \"published\" (%v):\n%s", err, stats)
			}
			stopCacheMount(t, p)
		})
	}
}
