package metastore

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// stores runs f on a directory store and on a memory store.
func stores(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Run("dir", func(t *testing.T) {
		s, err := Open(t.TempDir(), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		f(t, s)
	})
	t.Run("memory", func(t *testing.T) { f(t, Memory()) })
}

func TestContent(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		b := []byte(`{"schemaVersion":2}`)
		d := digest.FromBytes(b)
		if _, ok := s.Content(d); ok {
			t.Error("Content of an empty store: got ok")
		}
		s.PutContent(d, b)
		if got, ok := s.Content(d); !ok || string(got) != string(b) {
			t.Errorf("Content after PutContent: got %q, %v; want %q", got, ok, b)
		}
		other := digest.FromString("other")
		s.PutContent(other, b) // does not hash to other: dropped
		if got, ok := s.Content(other); ok {
			t.Errorf("Content of bytes put under a digest they do not hash to: got %q", got)
		}
		if _, ok := s.Content("sha256:nothex"); ok {
			t.Error("Content of an invalid digest: got ok")
		}
	})
}

// A file changed on disk is never served, and is removed.
func TestContentTamperedFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(`{"config":{"digest":"sha256:aa"}}`)
	d := digest.FromBytes(b)
	s.PutContent(d, b)
	p := filepath.Join(dir, contentDir, "sha256", d.Encoded())
	if err := os.WriteFile(p, []byte(`{"config":{"digest":"sha256:bb"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Content(d); ok {
		t.Errorf("Content of a tampered file: got %q, want nothing", got)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("tampered file: got stat %v, want it removed", err)
	}
	s.PutContent(d, b)
	if got, ok := s.Content(d); !ok || string(got) != string(b) {
		t.Errorf("Content after putting it back: got %q, %v", got, ok)
	}
}

func TestRefs(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
		d1, d2 := digest.FromString("one"), digest.FromString("two")
		s.PutRef(Ref{Registry: "r:5000", Repository: "a/b", Tag: "latest", Digest: d1, Time: t0})
		s.PutRef(Ref{Registry: "r:5000", Repository: "a/b", Tag: "latest", Digest: d2, Time: t0.Add(time.Hour)})
		s.PutRef(Ref{Registry: "r:5000", Repository: "a/b", Digest: d1, Time: t0})
		s.PutRef(Ref{Registry: "other", Repository: "a/b", Tag: "latest", Digest: d1, Time: t0})
		s.PutRef(Ref{Registry: "r:5000", Repository: "a/b", Tag: "bad", Digest: "nope", Time: t0}) // dropped

		r, ok := s.Tag("r:5000", "a/b", "latest")
		if !ok || r.Digest != d2 || !r.Time.Equal(t0.Add(time.Hour)) {
			t.Errorf("Tag(r:5000/a/b:latest): got %+v, %v; want the later answer %s", r, ok, d2)
		}
		if _, ok := s.Tag("r:5000", "a/b", "bad"); ok {
			t.Error("Tag of a reference put with an invalid digest: got ok")
		}
		if !s.HasDigestRef("r:5000", "a/b", d1) || s.HasDigestRef("r:5000", "a/b", d2) {
			t.Error("HasDigestRef: want d1 recorded and d2 not")
		}
		refs, err := s.Refs()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range refs {
			names = append(names, r.Name())
		}
		want := []string{"other/a/b:latest", "r:5000/a/b:latest", "r:5000/a/b@" + d1.String()}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("Refs: got %q, want %q", names, want)
		}
	})
}

// A reference file whose content names another reference is not taken for
// the one asked.
func TestRefFileMismatch(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	r := Ref{Registry: "r", Repository: "a", Tag: "x", Digest: digest.FromString("x"), Time: time.Now()}
	b, _ := json.Marshal(Ref{Registry: "r", Repository: "a", Tag: "y", Digest: r.Digest})
	if err := os.WriteFile(s.refPath(r.key()), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Tag("r", "a", "x"); ok {
		t.Errorf("Tag(r/a:x) from a file naming r/a:y: got %+v", got)
	}
}

func TestBlobImages(t *testing.T) {
	s, err := Open(t.TempDir(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	put := func(v any) digest.Digest {
		b, _ := json.Marshal(v)
		d := digest.FromBytes(b)
		s.PutContent(d, b)
		return d
	}
	desc := func(d digest.Digest) map[string]any { return map[string]any{"digest": d} }
	cfg, l1, l2, l3 := digest.FromString("cfg"), digest.FromString("l1"), digest.FromString("l2"), digest.FromString("l3")
	m1 := put(map[string]any{"config": desc(cfg), "layers": []any{desc(l1), desc(l2)}})
	m2 := put(map[string]any{"config": desc(cfg), "layers": []any{desc(l1), desc(l3)}})
	missing := digest.FromString("not stored")
	idx := put(map[string]any{"manifests": []any{desc(m2), desc(missing)}})
	s.PutRef(Ref{Registry: "r", Repository: "app", Tag: "1", Digest: m1, Time: time.Now()})
	s.PutRef(Ref{Registry: "r", Repository: "app", Digest: m1, Time: time.Now()})
	s.PutRef(Ref{Registry: "r", Repository: "multi", Tag: "latest", Digest: idx, Time: time.Now()})

	got, err := s.BlobImages()
	if err != nil {
		t.Fatal(err)
	}
	a1, a1d, ml := "r/app:1", "r/app@"+m1.String(), "r/multi:latest"
	want := map[string][]string{
		cfg.String(): {a1, a1d, ml},
		l1.String():  {a1, a1d, ml},
		l2.String():  {a1, a1d},
		l3.String():  {ml},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BlobImages:\n got %v\nwant %v", got, want)
	}
}
