package mounttest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
)

func gzipBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarBytes(t *testing.T, entries ...registrytest.Entry) []byte {
	var buf bytes.Buffer
	if err := registrytest.WriteTar(&buf, entries); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestV1(t *testing.T) {
	needFUSE(t)
	srv := registrytest.StartV1Server(t)
	tars := [][]byte{
		tarBytes(t, registrytest.Dir("etc"), registrytest.File("etc/os-release", "NAME=v1\n")),
		tarBytes(t, registrytest.File("hello", "hello from v1\n")),
	}
	imgs, err := srv.AddImage("test/oldimg", "latest",
		registrytest.V1LayerSpec{Tar: gzipBytes(t, tars[0])},
		registrytest.V1LayerSpec{Tar: tars[1]}) // v1 layers may be plain tar too
	if err != nil {
		t.Fatal(err)
	}
	mnt := mount(t, srv.Host, mountOpts{api: registry.APIV1})

	if got := readdir(t, filepath.Join(mnt, "test/oldimg/_tags")); !slices.Contains(got, "latest") {
		t.Errorf("ls test/oldimg/_tags: got %v, want latest", got)
	}
	dir := filepath.Join(mnt, "test/oldimg:latest")
	if got, want := readdir(t, dir), []string{"ancestry", "json", "layers", "rootfs"}; !slices.Equal(got, want) {
		t.Errorf("ls %s: got %v, want %v", dir, got, want)
	}
	top := imgs[len(imgs)-1]
	if got := readFile(t, filepath.Join(dir, "json")); !bytes.Equal(got, top.JSON) {
		t.Errorf("json: got %s, want %s", got, top.JSON)
	}
	var anc, wantAnc, ids []string
	for i := len(imgs) - 1; i >= 0; i-- {
		wantAnc = append(wantAnc, imgs[i].ID)
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "ancestry")), &anc); err != nil || !slices.Equal(anc, wantAnc) {
		t.Errorf("ancestry: got %v (%v), want %v", anc, err, wantAnc)
	}
	for _, im := range imgs {
		ids = append(ids, im.ID)
	}
	sort.Strings(ids)
	if got := readdir(t, filepath.Join(dir, "layers")); !slices.Equal(got, ids) {
		t.Errorf("ls layers: got %v, want %v", got, ids)
	}
	for i, im := range imgs {
		ld := filepath.Join(dir, "layers", im.ID)
		if got := readFile(t, filepath.Join(ld, "json")); !bytes.Equal(got, im.JSON) {
			t.Errorf("%s/json: got %s, want %s", ld, got, im.JSON)
		}
		if got := string(readFile(t, filepath.Join(ld, "digest"))); got != im.Checksum+"\n" {
			t.Errorf("%s/digest: got %q, want %q", ld, got, im.Checksum+"\n")
		}
		sum := sha256.Sum256(im.Layer)
		if got, want := sha256File(t, filepath.Join(ld, "blob")), digest.NewDigestFromBytes(digest.SHA256, sum[:]); got != want {
			t.Errorf("%s/blob: got %s, want %s", ld, got, want)
		}
		if got := readFile(t, filepath.Join(ld, "layer.tar")); !bytes.Equal(got, tars[i]) {
			t.Errorf("%s/layer.tar: got %d bytes, want %d", ld, len(got), len(tars[i]))
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "test/oldimg:nosuch")); errnoOf(err) != 2 {
		t.Errorf("stat unknown v1 tag: got %v, want ENOENT", err)
	}
}
