package rootfs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry/registrytest"
)

// A layer may hardlink to a file of a layer below it: however the upper
// layer is stored, the merged tree resolves the link through the layer
// below, counts both paths, and reports a link to nowhere as not-exist.
func TestHardlinkIntoLowerLayer(t *testing.T) {
	ctx := context.Background()
	build := func(c registrytest.Compression, entries ...registrytest.Entry) *registrytest.Layer {
		t.Helper()
		l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: entries, Compression: c})
		if err != nil {
			t.Fatalf("build %s layer: %v", c, err)
		}
		return l
	}
	open := func(key string, l *registrytest.Layer, tocDigest string) *layerindex.Layer {
		t.Helper()
		m, err := layerindex.NewManager(layerindex.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m.Layer(key, layerindex.UncachedBlob(memBlob(l.Blob)), layerindex.LayerOptions{TOCDigest: tocDigest})
	}
	base := open("base", build(registrytest.Gzip, registrytest.Dir("app"), registrytest.File("app/main.sh", "#!/bin/sh\necho main\n")), "")
	baseIdx, err := base.Index(ctx)
	if err != nil {
		t.Fatalf("base Index: %v", err)
	}
	upper := []registrytest.Entry{
		registrytest.File("app/config.json", `{"debug": false}`+"\n"),
		registrytest.Hardlink("app/main-link.sh", "app/main.sh").WithMode(0o755),
		// A link to an entry that comes later in the same tar.
		registrytest.Hardlink("app/early-link", "app/late"),
		registrytest.File("app/late", "written after its link\n"),
		registrytest.Hardlink("app/nowhere", "no/such/file"),
	}
	sg := build(registrytest.EStargz, upper...)
	for _, tc := range []struct {
		name      string
		layer     *registrytest.Layer
		tocDigest string
	}{
		{"tar", build(registrytest.Uncompressed, upper...), ""},
		{"gzip", build(registrytest.Gzip, upper...), ""},
		{"zstd", build(registrytest.Zstd, upper...), ""},
		{"estargz", sg, ""},
		{"estargz-annotated", sg, sg.Annotations[layerindex.EStargzTOCAnnotation]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := open("upper", tc.layer, tc.tocDigest).Index(ctx)
			if err != nil {
				t.Fatalf("Index: %v", err)
			}
			m := Merge([]*layerindex.Index{baseIdx, x})
			me, ok := m.Lookup("app/main-link.sh")
			if !ok {
				t.Fatal("merged app/main-link.sh: missing")
			}
			target, err := m.Resolve(me)
			if err != nil {
				t.Fatalf("merged Resolve(app/main-link.sh): %v", err)
			}
			if target.Layer != 0 || target.Name != "app/main.sh" {
				t.Errorf("merged Resolve(app/main-link.sh): got layer %d %q, want layer 0 app/main.sh", target.Layer, target.Name)
			}
			r, err := base.OpenFile(ctx, target.Entry)
			if err != nil {
				t.Fatalf("OpenFile(%q): %v", target.Name, err)
			}
			buf := make([]byte, r.Size())
			if n, err := r.ReadAt(ctx, buf, 0); n != len(buf) || err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("ReadAt(%q): got %d, %v; want %d bytes", target.Name, n, err, len(buf))
			}
			if got := string(buf); got != "#!/bin/sh\necho main\n" {
				t.Errorf("merged app/main-link.sh content: got %q", got)
			}
			if n := m.Nlink(me); n != 2 {
				t.Errorf("merged Nlink(app/main-link.sh): got %d, want 2", n)
			}
			if me, ok := m.Lookup("app/nowhere"); !ok {
				t.Error("merged app/nowhere: missing")
			} else if _, err := m.Resolve(me); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("merged Resolve(app/nowhere): got %v, want not-exist", err)
			}
		})
	}
}
