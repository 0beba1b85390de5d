package layerindex

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	logtest "github.com/sirupsen/logrus/hooks/test"
)

// manyEntries is a tar of n empty files under prefix.
func manyEntries(t *testing.T, prefix string, n int) []byte {
	t.Helper()
	files := make([]tarFile, n)
	for i := range files {
		files[i] = reg(fmt.Sprintf("%s/dir%02d/file-%06d", prefix, i%50, i), nil)
	}
	return makeTar(t, files)
}

// The indexes of all a Manager's layers together stay within
// MaxIndexBytes: idle ones are dropped from memory (and read back from
// disk) to make room, and an index that cannot fit fails with
// ErrIndexMemory and one log line, whatever its format, rather than
// growing without bound (three layers of a million entries each once
// took 1.36 GiB).
func TestIndexMemoryBound(t *testing.T) {
	ctx := context.Background()
	const n = 500
	layers := map[string][]byte{}
	for _, name := range []string{"a", "b", "c"} {
		layers[name] = gzipOf(t, manyEntries(t, name, n), 1)
	}
	// What one layer's index costs, unbounded.
	probe := newTestManager(t, Options{MaxIndexBytes: -1})
	if _, err := probe.Layer("a", UncachedBlob(newMemBlob(layers["a"])), LayerOptions{}).Index(ctx); err != nil {
		t.Fatal(err)
	}
	one, _ := probe.IndexMemory()
	if one <= 0 {
		t.Fatalf("IndexMemory of one layer: got %d, want it counted", one)
	}

	// Room for one and a half layers: each layer indexes, the idle ones
	// making room, and comes back from disk when asked again.
	log, hook := logtest.NewNullLogger()
	limit := one * 3 / 2
	m := newTestManager(t, Options{MaxIndexBytes: limit, Dir: t.TempDir(), Logger: log})
	for round := 0; round < 2; round++ {
		for _, name := range []string{"a", "b", "c"} {
			x, err := m.Layer(name, UncachedBlob(newMemBlob(layers[name])), LayerOptions{}).Index(ctx)
			if err != nil {
				t.Fatalf("round %d: Index(%s): %v", round, name, err)
			}
			if _, ok := x.Lookup(name + "/dir07/file-000007"); !ok {
				t.Fatalf("round %d: Index(%s): an entry is missing", round, name)
			}
			if used, _ := m.IndexMemory(); used > limit {
				t.Fatalf("round %d: after Index(%s): indexes hold %d bytes, bound %d", round, name, used, limit)
			}
		}
	}
	if len(hook.AllEntries()) != 0 {
		t.Errorf("log: got %v, want nothing while everything fits", hook.AllEntries())
	}

	// A layer bigger than the whole bound fails, in every format and for
	// eStargz, with one log line per layer however often it is asked for.
	big := manyEntries(t, "big", 2*n)
	sg, _ := buildStargz(t, big, 64<<10)
	cases := map[string][]byte{"estargz": sg}
	for _, c := range blobCases(t, big) {
		cases[c.name] = c.blob
	}
	for name, blob := range cases {
		t.Run(name, func(t *testing.T) {
			log, hook := logtest.NewNullLogger()
			m := newTestManager(t, Options{MaxIndexBytes: limit, Logger: log})
			l := m.Layer("sha256:big", UncachedBlob(newMemBlob(blob)), LayerOptions{})
			for i := 0; i < 3; i++ {
				_, err := l.Index(ctx)
				if !errors.Is(err, ErrIndexMemory) || !strings.Contains(err.Error(), "MiB") {
					t.Fatalf("Index of a layer over the bound: got %v, want ErrIndexMemory naming the bound", err)
				}
				if errors.Is(err, ErrBadTar) {
					t.Fatalf("Index: %v: the tar is not to blame", err)
				}
			}
			if got := len(hook.AllEntries()); got != 1 {
				t.Errorf("log: got %d lines, want 1: %v", got, hook.AllEntries())
			}
			if used, _ := m.IndexMemory(); used != 0 {
				t.Errorf("after failed passes: indexes hold %d bytes, want 0", used)
			}
			// The tar stream itself is still served.
			if _, err := l.TarReadAt(ctx, make([]byte, 512), 0); err != nil {
				t.Errorf("TarReadAt: %v", err)
			}
		})
	}
}
