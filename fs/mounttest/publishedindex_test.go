package mounttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/registry/registrytest"
	"github.com/regfs/regfs/session"
)

// publishedImage pushes a one-layer gzip image of about 10 MiB of small
// files (several checkpoints apart) to r and returns the layer and its
// entries.
func publishedImage(t *testing.T, r *registrytest.Registry, repo, tag string) (*registrytest.Image, []registrytest.Entry) {
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
	return img, entries
}

// indexPush runs `regfs index push` of host/ref with a cache dir of its own.
func indexPush(t testing.TB, host, ref string) string {
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
			img, entries := publishedImage(t, r, tc.repo, "v1")
			layer := img.Layers[0]
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

// The published index format as a reader outside layerindex sees it
// (README, "Published layer indexes"): header, gob payload, then the
// checkpoint windows. gob matches fields by name, so these mirror types
// read and write what layerindex does.
type (
	mirrorCheckpoint struct {
		UOff, COff      int64
		Bit             uint8
		Window          []byte
		Check, CheckLen uint32
	}
	mirrorIndex struct {
		Key          string
		Format       layerindex.Format
		TarSize      int64
		Checkpoints  []mirrorCheckpoint
		HasTar       bool
		Root         *layerindex.Entry
		Entries      []*layerindex.Entry
		NotStargz    bool
		WindowsAfter []uint32
		windows      []byte // what follows the payload
	}
)

func decodeMirror(t *testing.T, b []byte) *mirrorIndex {
	t.Helper()
	if len(b) < 24 || string(b[:8]) != "RGFSIDX\x00" || binary.LittleEndian.Uint32(b[8:]) != layerindex.PersistVersion {
		t.Fatalf("published index: no magic or another version")
	}
	n := 24 + binary.LittleEndian.Uint64(b[12:])
	var m mirrorIndex
	if err := gob.NewDecoder(bytes.NewReader(b[24:n])).Decode(&m); err != nil {
		t.Fatalf("published index: %v", err)
	}
	m.windows = b[n:]
	return &m
}

func encodeMirror(t *testing.T, m *mirrorIndex) []byte {
	t.Helper()
	var payload bytes.Buffer
	if err := gob.NewEncoder(&payload).Encode(m); err != nil {
		t.Fatal(err)
	}
	out := append([]byte("RGFSIDX\x00"), binary.LittleEndian.AppendUint32(nil, layerindex.PersistVersion)...)
	out = binary.LittleEndian.AppendUint64(out, uint64(payload.Len()))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(payload.Bytes(), crc32.MakeTable(crc32.Castagnoli)))
	return append(append(out, payload.Bytes()...), m.windows...)
}

// getJSON GETs path of the registry into v.
func getJSON(t testing.TB, r *registrytest.Registry, path, accept string, v any) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL+path, nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return b
}

// republishLie replaces the index published for img in repo (through the
// referrers tag schema) with one changed by lie.
func republishLie(t *testing.T, r *registrytest.Registry, repo string, img *registrytest.Image, lie func(*mirrorIndex)) {
	t.Helper()
	ctx := context.Background()
	tag := registry.ReferrersTag(img.Digest)
	var refs ocispec.Index
	getJSON(t, r, "/v2/"+repo+"/manifests/"+tag, ocispec.MediaTypeImageIndex, &refs)
	var m ocispec.Manifest
	getJSON(t, r, "/v2/"+repo+"/manifests/"+refs.Manifests[0].Digest.String(), ocispec.MediaTypeImageManifest, &m)
	blob := getJSON(t, r, "/v2/"+repo+"/blobs/"+m.Layers[0].Digest.String(), "*/*", nil)
	idx := decodeMirror(t, blob)
	lie(idx)
	p := registrytest.NewPusher(r)
	lying := encodeMirror(t, idx)
	d, err := p.PushBytes(ctx, repo, lying)
	if err != nil {
		t.Fatal(err)
	}
	m.Layers[0].Digest, m.Layers[0].Size = d, int64(len(lying))
	raw, _ := json.Marshal(m)
	if err := p.PushManifest(ctx, repo, digest.FromBytes(raw).String(), ocispec.MediaTypeImageManifest, raw); err != nil {
		t.Fatal(err)
	}
	refs.Manifests = []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: session.IndexArtifactType,
		Digest: digest.FromBytes(raw), Size: int64(len(raw))}}
	rawRefs, _ := json.Marshal(refs)
	if err := p.PushManifest(ctx, repo, tag, ocispec.MediaTypeImageIndex, rawRefs); err != nil {
		t.Fatal(err)
	}
}

// A published index that lies about a file (its content digest, or where
// its data is) never gets a wrong byte served: the first read of that file
// is EIO, the index is dropped, and from then on the layer's own pass
// serves the file, and every other, right.
func TestPublishedIndexLieIsEIO(t *testing.T) {
	needFUSE(t)
	r := registrytest.StartRegistry(t)
	for _, tc := range []struct {
		name string
		lie  func(victim, other *layerindex.Entry)
	}{
		{"content digest", func(v, _ *layerindex.Entry) { v.ContentSHA256[3] ^= 0x40 }},
		{"another files data", func(v, o *layerindex.Entry) {
			v.HeaderOff, v.Offset, v.Size, v.ContentSHA256 = o.HeaderOff, o.Offset, o.Size, o.ContentSHA256
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "test/pub-lie-" + strings.ReplaceAll(tc.name, " ", "-")
			img, entries := publishedImage(t, r, repo, "v1")
			indexPush(t, r.Host, repo+":v1")
			victim, other := entries[len(entries)-1], entries[len(entries)-2]
			republishLie(t, r, repo, img, func(m *mirrorIndex) {
				var v, o *layerindex.Entry
				for _, e := range m.Entries {
					switch e.Name {
					case victim.Name:
						v = e
					case other.Name:
						o = e
					}
				}
				tc.lie(v, o)
			})
			p := startCacheMount(t, r.Host, t.TempDir(), "--block-size", "64K")
			rootfs := filepath.Join(p.mnt, repo+":v1", "rootfs")
			got, err := os.ReadFile(filepath.Join(rootfs, victim.Name))
			if err == nil {
				t.Fatalf("read %s through the lying index: %d bytes (right: %v), want EIO", victim.Name, len(got), bytes.Equal(got, victim.Data()))
			}
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read %s through the lying index: got %v, want EIO", victim.Name, err)
			}
			// The kernel may still hold what the lie said of the victim
			// (its size): then it stays EIO, never cut short.
			if got, err := os.ReadFile(filepath.Join(rootfs, victim.Name)); err != nil && !errors.Is(err, syscall.EIO) || err == nil && !bytes.Equal(got, victim.Data()) {
				t.Fatalf("read %s after the drop: got %d bytes, %v; want the file's %d or EIO", victim.Name, len(got), err, victim.Size())
			}
			if got := readFile(t, filepath.Join(rootfs, other.Name)); !bytes.Equal(got, other.Data()) {
				t.Fatalf("read %s after the drop: got %d bytes, want the file's %d", other.Name, len(got), other.Size())
			}
			stopCacheMount(t, p)
			if !strings.Contains(p.stderr.String(), "published index dropped") {
				t.Errorf("log: want one line saying the published index was dropped; got:\n%s", p.stderr)
			}
		})
	}
}
