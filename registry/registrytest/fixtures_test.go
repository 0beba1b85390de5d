package registrytest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestGeneratedReadAtMatchesWriteTo(t *testing.T) {
	for _, compressible := range []bool{false, true} {
		g := Generated{Seed: 5, Size: 3*generatedBlock + 123, Compressible: compressible}
		var whole bytes.Buffer
		if _, err := g.WriteTo(&whole); err != nil {
			t.Fatal(err)
		}
		if int64(whole.Len()) != g.Size {
			t.Fatalf("WriteTo: got %d bytes, want %d", whole.Len(), g.Size)
		}
		tests := []struct {
			off, n  int64
			wantN   int
			wantEOF bool
		}{
			{0, 10, 10, false},
			{generatedBlock - 3, 7, 7, false},
			{g.Size - 5, 5, 5, false},
			{g.Size - 5, 9, 5, true},
			{g.Size, 1, 0, true},
		}
		for _, tt := range tests {
			p := make([]byte, tt.n)
			n, err := g.ReadAt(p, tt.off)
			if n != tt.wantN || errors.Is(err, io.EOF) != tt.wantEOF {
				t.Errorf("ReadAt(%d, %d): got %d, %v; want %d, eof=%v", tt.n, tt.off, n, err, tt.wantN, tt.wantEOF)
			}
			if !bytes.Equal(p[:n], whole.Bytes()[tt.off:tt.off+int64(n)]) {
				t.Errorf("ReadAt(%d, %d): bytes differ from WriteTo", tt.n, tt.off)
			}
		}
		if _, err := g.ReadAt(make([]byte, 1), -1); err == nil {
			t.Error("ReadAt(-1): got no error, want one")
		}
		if compressible && bytes.IndexByte(whole.Bytes(), 0) >= 0 {
			t.Error("compressible content: got a NUL byte, want text")
		}
	}
	a := Generated{Seed: 1, Size: 100}.Bytes()
	b := Generated{Seed: 2, Size: 100}.Bytes()
	if bytes.Equal(a, b) {
		t.Error("seeds 1 and 2: got the same content, want different")
	}
}

// readTar parses a tar stream into headers and contents by name.
func readTar(t *testing.T, raw []byte) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(raw))
	var hdrs []*tar.Header
	data := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		hdrs = append(hdrs, h)
		data[h.Name] = b
	}
}

func TestSmallLayersTarContent(t *testing.T) {
	sets := SmallLayerEntries()
	l, err := BuildLayer(LayerSpec{Entries: sets[0]})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.TarBytes()
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(raw); got != l.DiffID {
		t.Errorf("diff_id: got %s from TarBytes, want %s", got, l.DiffID)
	}
	if int64(len(raw)) != l.UncompressedSize {
		t.Errorf("uncompressed size: got %d, want %d", len(raw), l.UncompressedSize)
	}
	if got := digest.FromBytes(l.Blob); got != l.Digest || int64(len(l.Blob)) != l.Size {
		t.Errorf("blob: got %s/%d, want %s/%d", got, len(l.Blob), l.Digest, l.Size)
	}
	hdrs, data := readTar(t, raw)
	byName := map[string]*tar.Header{}
	for _, h := range hdrs {
		byName[h.Name] = h
	}
	longName := "opt/" + strings.Repeat("very-long-file-name-", 6) + "end.txt"
	tests := []struct {
		name  string
		check func(h *tar.Header) bool
	}{
		{"tmp/", func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir && h.Mode == 0o1777 }},
		{"bin/sutool", func(h *tar.Header) bool { return h.Mode == 0o4755 }},
		{"bin/sgtool", func(h *tar.Header) bool { return h.Mode == 0o2755 }},
		{"bin/tool-hard", func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && h.Linkname == "bin/sutool" }},
		{"usr/bin/tool", func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "/bin/tool" }},
		{"dev/null", func(h *tar.Header) bool { return h.Typeflag == tar.TypeChar && h.Devmajor == 1 && h.Devminor == 3 }},
		{"dev/loop0", func(h *tar.Header) bool { return h.Typeflag == tar.TypeBlock && h.Devmajor == 7 }},
		{"run/fifo", func(h *tar.Header) bool { return h.Typeflag == tar.TypeFifo }},
		{"etc/xattrs", func(h *tar.Header) bool {
			return h.PAXRecords["SCHILY.xattr.user.regfs"] == "hello" && h.PAXRecords["SCHILY.xattr.user.empty"] == ""
		}},
		{"home/user/.profile", func(h *tar.Header) bool { return h.Uid == 1000 && h.Uname == "user" && h.Mode == 0o600 }},
		{"home/user/notes", func(h *tar.Header) bool { return h.ModTime.Unix() == 1000000000 }},
		{longName, func(h *tar.Header) bool { return len(h.Name) > 100 }},
		{"etc/hostname", func(h *tar.Header) bool { return h.ModTime.Equal(DefaultModTime) }},
	}
	for _, tt := range tests {
		h, ok := byName[tt.name]
		if !ok {
			t.Errorf("%s: not in tar", tt.name)
			continue
		}
		if !tt.check(h) {
			t.Errorf("%s: header %+v does not have the expected fields", tt.name, h)
		}
	}
	if got := data["usr/share/doc/big.txt"]; !bytes.Equal(got, Generated{Seed: 11, Size: 40000, Compressible: true}.Bytes()) {
		t.Errorf("big.txt: got %d bytes that differ from the generator", len(got))
	}
	if !bytes.Contains(raw, []byte("path=")) {
		t.Error("tar: got no PAX path record, want one for the long base name")
	}
}

func TestMergeLayersSmall(t *testing.T) {
	tree := MergeLayers(SmallLayerEntries()...)
	tests := []struct {
		path    string
		present bool
		typ     byte
		content string
	}{
		{"etc/old.conf", false, 0, ""},
		{"etc/.wh.old.conf", false, 0, ""},
		{"etc/hostname", true, tar.TypeReg, "regfs-layer2\n"},
		{"var/cache/a", false, 0, ""},
		{"var/cache/sub/c", false, 0, ""},
		{"var/cache/sub", false, 0, ""},
		{"var/cache/new", true, tar.TypeReg, "only this survives in var/cache\n"},
		{"var/cache", true, tar.TypeDir, ""},
		{"usr/replaced", true, tar.TypeDir, ""},
		{"usr/replaced/inside", true, tar.TypeReg, "inside the dir that replaced a file\n"},
		{"opt/dir-to-file", true, tar.TypeReg, "now a file\n"},
		{"opt/dir-to-file/child", false, 0, ""},
		{"home/user/.profile", false, 0, ""},
		{"home/user/notes", true, tar.TypeReg, "dear diary\n"},
		{"bin/tool", true, tar.TypeReg, "#!/bin/sh\necho tool v3\n"},
		{"usr/lib/dangling", true, tar.TypeSymlink, ""},
	}
	for _, tt := range tests {
		e, ok := tree[tt.path]
		if ok != tt.present {
			t.Errorf("%s: got present=%v, want %v", tt.path, ok, tt.present)
			continue
		}
		if !ok {
			continue
		}
		if e.Type != tt.typ {
			t.Errorf("%s: got type %q, want %q", tt.path, e.Type, tt.typ)
		}
		if tt.content != "" && string(e.Data()) != tt.content {
			t.Errorf("%s: got %q, want %q", tt.path, e.Data(), tt.content)
		}
	}
	if got := tree["bin/tool"].Mode; got != 0o700 {
		t.Errorf("bin/tool mode: got %o, want 700", got)
	}
}

func TestBuildLayerCompressions(t *testing.T) {
	entries := SmallLayerEntries()[0]
	want, err := BuildLayer(LayerSpec{Entries: entries, Compression: Uncompressed})
	if err != nil {
		t.Fatal(err)
	}
	if want.Digest != want.DiffID || !bytes.Equal(want.Blob, mustTar(t, want)) {
		t.Fatalf("uncompressed: blob digest %s, diff_id %s: want equal", want.Digest, want.DiffID)
	}
	decompress := map[Compression]func([]byte) ([]byte, error){
		Gzip: func(b []byte) ([]byte, error) {
			zr, err := kgzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(zr)
		},
		Zstd: func(b []byte) ([]byte, error) {
			zr, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			defer zr.Close()
			return io.ReadAll(zr)
		},
	}
	for c, dec := range decompress {
		l, err := BuildLayer(LayerSpec{Entries: entries, Compression: c})
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		raw, err := dec(l.Blob)
		if err != nil {
			t.Fatalf("%s: decompress: %v", c, err)
		}
		if got := digest.FromBytes(raw); got != want.DiffID || l.DiffID != want.DiffID {
			t.Errorf("%s: got diff_id %s (recorded %s), want %s", c, got, l.DiffID, want.DiffID)
		}
		again, err := BuildLayer(LayerSpec{Entries: entries, Compression: c})
		if err != nil || again.Digest != l.Digest {
			t.Errorf("%s: rebuild gave digest %s, want %s (deterministic)", c, again.Digest, l.Digest)
		}
	}
	if _, err := BuildLayer(LayerSpec{Entries: entries, Compression: "lz4"}); err == nil {
		t.Error("unknown compression: got no error, want one")
	}
	if _, err := BuildLayer(LayerSpec{Entries: []Entry{{Name: "x", Type: 'Q'}}}); err == nil {
		t.Error("unknown entry type: got no error, want one")
	}
	if _, err := BuildLayer(LayerSpec{Entries: []Entry{{Name: "l", Type: tar.TypeSymlink}}}); err == nil {
		t.Error("symlink without target: got no error, want one")
	}
}

func mustTar(t *testing.T, l *Layer) []byte {
	t.Helper()
	b, err := l.TarBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEStargzLayer(t *testing.T) {
	l, err := BuildLayer(LayerSpec{Entries: SmallLayerEntries()[0], Compression: EStargz})
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(l.Blob), 0, l.Size))
	if err != nil {
		t.Fatalf("estargz.Open: %v", err)
	}
	if got, want := r.TOCDigest().String(), l.Annotations[estargz.TOCJSONDigestAnnotation]; got != want {
		t.Errorf("TOC digest: got %s, want annotation %s", got, want)
	}
	raw := mustTar(t, l)
	if got := digest.FromBytes(raw); got != l.DiffID {
		t.Errorf("diff_id: got %s, want %s", got, l.DiffID)
	}
	_, data := readTar(t, raw)
	if got := data["var/lib/data.bin"]; !bytes.Equal(got, Generated{Seed: 12, Size: 70000}.Bytes()) {
		t.Errorf("data.bin in estargz tar: got %d bytes that differ", len(got))
	}
	e, ok := r.Lookup("var/lib/data.bin")
	if !ok {
		t.Fatal("estargz TOC: var/lib/data.bin missing")
	}
	chunks := 0
	for off := int64(0); off < e.Size; off += EStargzChunkSize {
		if _, ok := r.ChunkEntryForOffset("var/lib/data.bin", off); ok {
			chunks++
		}
	}
	if chunks < 2 {
		t.Errorf("data.bin: got %d chunks, want several (chunk size %d)", chunks, EStargzChunkSize)
	}
}

func TestBuildImageRejects(t *testing.T) {
	l, err := BuildLayer(LayerSpec{Entries: []Entry{File("a", "a")}, Compression: Zstd})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildImage(ImageSpec{Format: FormatDocker, Layers: []*Layer{l}}); !errors.Is(err, errUnsupported) {
		t.Errorf("docker+zstd: got %v, want errUnsupported", err)
	}
	if _, err := BuildImage(ImageSpec{Layers: []*Layer{l}, History: []ocispec.History{{EmptyLayer: true}}}); err == nil {
		t.Error("history without a layer entry: got no error, want one")
	}
	if _, err := BuildImage(ImageSpec{Format: "v1", Layers: []*Layer{l}}); err == nil {
		t.Error("unknown format: got no error, want one")
	}
	img, err := BuildImage(ImageSpec{Layers: []*Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildIndex(FormatDocker, nil, img); err == nil {
		t.Error("OCI image in Docker list: got no error, want one")
	}
}

func TestLargeLayerCached(t *testing.T) {
	const size = 3 << 20
	seed := uint64(0xfeed)
	base := LargeCacheDir()
	l, err := BuildLargeLayer(seed, size)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.BlobPath, base) || l.Blob != nil {
		t.Fatalf("blob: got path %q (in memory %v), want a file under %s", l.BlobPath, l.Blob != nil, base)
	}
	blob, err := os.ReadFile(l.BlobPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(blob); got != l.Digest || int64(len(blob)) != l.Size {
		t.Fatalf("blob: got %s/%d, want %s/%d", got, len(blob), l.Digest, l.Size)
	}
	h := sha256.New()
	if err := l.WriteTarTo(h); err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.DiffID.String() {
		t.Errorf("regenerated tar: got %s, want diff_id %s", got, l.DiffID)
	}
	var content int64
	for _, e := range l.Entries {
		content += e.Size()
	}
	if content != size {
		t.Errorf("content size: got %d, want %d", content, size)
	}
	again, err := BuildLargeLayer(seed, size)
	if err != nil || again.Digest != l.Digest {
		t.Fatalf("cached rebuild: got %v %v, want digest %s", again, err, l.Digest)
	}
	if ratio := float64(l.Size) / float64(size); ratio < 0.4 || ratio > 0.95 {
		t.Errorf("compression ratio: got %.2f, want a mix of compressible and incompressible data", ratio)
	}
}

// getRegistry fetches u with an Accept list and returns the body.
func getRegistry(t *testing.T, u string, accept ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

var allManifestTypes = []string{MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList}

func TestPushFixturesPullBack(t *testing.T) {
	reg := StartRegistry(t)
	f := PushFixtures(t, reg, WithLargeSize(4<<20))
	if st := reg.Stats(); st.Requests != 0 {
		t.Errorf("stats after PushFixtures: got %v, want reset", st)
	}
	for ref, img := range f.Images {
		repo, tag := refRepo(ref), ref[len(refRepo(ref))+1:]
		resp, body := getRegistry(t, reg.URL+"/v2/"+repo+"/manifests/"+tag, allManifestTypes...)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: got status %d, want 200", ref, resp.StatusCode)
			continue
		}
		if !bytes.Equal(body, img.Manifest) {
			t.Errorf("%s: manifest bytes differ from recorded", ref)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != img.Digest.String() {
			t.Errorf("%s: got digest %s, want %s", ref, got, img.Digest)
		}
		if got := resp.Header.Get("Content-Type"); got != img.MediaType {
			t.Errorf("%s: got content type %s, want %s", ref, got, img.MediaType)
		}
		_, cfg := getRegistry(t, reg.URL+"/v2/"+repo+"/blobs/"+img.ConfigDigest.String())
		if !bytes.Equal(cfg, img.Config) {
			t.Errorf("%s: config bytes differ", ref)
		}
		var c ocispec.Image
		if err := json.Unmarshal(cfg, &c); err != nil || len(c.RootFS.DiffIDs) != len(img.Layers) {
			t.Errorf("%s: config diff_ids: got %v (%v), want %d", ref, c.RootFS.DiffIDs, err, len(img.Layers))
		}
		for i, l := range img.Layers {
			if l.Size > 1<<20 {
				continue // the large blob gets its own ranged check below
			}
			_, b := getRegistry(t, reg.URL+"/v2/"+repo+"/blobs/"+l.Digest.String())
			if digest.FromBytes(b) != l.Digest || c.RootFS.DiffIDs[i] != l.DiffID {
				t.Errorf("%s layer %d: blob or diff_id mismatch", ref, i)
			}
		}
	}
	for ref, idx := range f.Indexes {
		repo, tag := refRepo(ref), ref[len(refRepo(ref))+1:]
		resp, body := getRegistry(t, reg.URL+"/v2/"+repo+"/manifests/"+tag, allManifestTypes...)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, idx.Manifest) || resp.Header.Get("Docker-Content-Digest") != idx.Digest.String() {
			t.Errorf("%s: got %d digest %s, want 200 with recorded bytes, digest %s", ref, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), idx.Digest)
		}
		for _, img := range idx.Images {
			resp, body := getRegistry(t, reg.URL+"/v2/"+repo+"/manifests/"+img.Digest.String(), allManifestTypes...)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Manifest) {
				t.Errorf("%s child %s: got %d, want 200 with recorded bytes", ref, img.Digest, resp.StatusCode)
			}
		}
	}
	if len(f.Multi.Images) != 3 || f.Multi.Images[1].Platform.Variant != "v8" {
		t.Errorf("multi: got %d images, want 3 with arm64/v8 second", len(f.Multi.Images))
	}
	if f.Small.Layers[0].Digest != f.SmallDocker.Layers[0].Digest || f.Small.Digest == f.SmallDocker.Digest {
		t.Error("small vs docker: want the same layer blobs and different manifests")
	}

	// A range of the large blob.
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/"+RepoLarge+"/blobs/"+f.Large.Layers[0].Digest.String(), nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	whole, err := f.Large.Layers[0].BlobBytes()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, whole[1000:2000]) {
		t.Errorf("large range: got %d with %d bytes, want 206 with the recorded bytes", resp.StatusCode, len(part))
	}

	// Tags and catalog.
	_, body := getRegistry(t, reg.URL+"/v2/"+RepoPaging+"/tags/list")
	var tl struct{ Tags []string }
	if err := json.Unmarshal(body, &tl); err != nil || len(tl.Tags) != PagingTagCount {
		t.Errorf("paging tags: got %v (%v), want %d", tl.Tags, err, PagingTagCount)
	}
	_, body = getRegistry(t, reg.URL+"/v2/_catalog")
	var cat struct{ Repositories []string }
	if err := json.Unmarshal(body, &cat); err != nil || strings.Join(cat.Repositories, ",") != strings.Join(f.Repositories(), ",") {
		t.Errorf("catalog: got %v (%v), want %v", cat.Repositories, err, f.Repositories())
	}
	if got := f.Tags(RepoSmall); strings.Join(got, ",") != "docker,latest" {
		t.Errorf("Tags(%s): got %v, want [docker latest]", RepoSmall, got)
	}
}

func TestPushFixturesWithAuth(t *testing.T) {
	for _, opt := range []Option{WithHtpasswd("u", "p"), WithTokenAuth("u", "p")} {
		reg := StartRegistry(t, opt, WithInMemoryStorage())
		f := PushFixtures(t, reg, WithoutLarge())
		if f.Large != nil {
			t.Error("WithoutLarge: got a large image, want none")
		}
		bad := NewPusherFor(reg.Host, &Credentials{User: "u", Password: "wrong"})
		if err := bad.PushImage(t.Context(), "test/other", f.Deep, "x"); err == nil {
			t.Errorf("push with wrong password: got no error, want one")
		}
	}
}
