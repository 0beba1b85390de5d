package layerindex

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"hash/crc32"
	"math/rand"
	"testing"
)

// Every checkpoint carries the CRC of the output after it, as the pass saw it.
func TestCheckpointChecksCoverTheOutput(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 21, 60, 96<<10)
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"one member", gzipOf(t, tarData, gzip.DefaultCompression)},
		{"stored blocks", gzipOf(t, tarData, gzip.NoCompression)},
		{"seven members", gzipMembers(t, tarData, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t, Options{ReadSize: 64 << 10, Spacing: 128 << 10})
			l := m.Layer("k", UncachedBlob(newMemBlob(tc.blob)), LayerOptions{})
			if _, err := l.Index(ctx); err != nil {
				t.Fatal(err)
			}
			cps := l.loadedIndex(ctx).Checkpoints
			if len(cps) < 2 {
				t.Fatalf("got %d checkpoints, want several", len(cps))
			}
			for i, cp := range cps {
				end := min(cp.UOff+checkLen, int64(len(tarData)))
				if want := uint32(end - cp.UOff); cp.CheckLen != want {
					t.Errorf("checkpoint %d at %d: got CheckLen %d, want %d", i, cp.UOff, cp.CheckLen, want)
				}
				if want := crc32.ChecksumIEEE(tarData[cp.UOff:end]); cp.Check != want {
					t.Errorf("checkpoint %d at %d: got Check %08x, want %08x", i, cp.UOff, cp.Check, want)
				}
			}
		})
	}
}

// A checkpoint that does not resume where the pass was (a wrong bit or
// byte, as an inflater that miscounts its input would record, or a window
// of other bytes, which inflates without an error) fails the read; it never
// serves other bytes.
func TestWrongCheckpointFailsRead(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 22, 40, 128<<10)
	blob := gzipOf(t, tarData, gzip.DefaultCompression)
	for _, tc := range []struct {
		name  string
		spoil func(cp *checkpoint)
	}{
		{"bit off by one", func(cp *checkpoint) { cp.Bit = (cp.Bit + 1) % 8 }},
		{"byte ahead", func(cp *checkpoint) { cp.COff++ }},
		{"byte behind", func(cp *checkpoint) { cp.COff-- }},
		{"three bytes ahead", func(cp *checkpoint) { cp.COff += 3 }},
		{"window of other bytes", func(cp *checkpoint) {
			w := bytes.Clone(cp.Window)
			for i := range w {
				w[i] ^= 0x55
			}
			cp.Window = w
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestManager(t, Options{ReadSize: 64 << 10, Spacing: 128 << 10})
			l := m.Layer("k", UncachedBlob(newMemBlob(blob)), LayerOptions{})
			if _, err := l.Index(ctx); err != nil {
				t.Fatal(err)
			}
			cps := l.loadedIndex(ctx).Checkpoints
			for i := range cps {
				tc.spoil(&cps[i])
			}
			rng := rand.New(rand.NewSource(3))
			failed := 0
			for i := 0; i < 20; i++ {
				off := cps[0].UOff + rng.Int63n(int64(len(tarData))-cps[0].UOff)
				p := make([]byte, 1+rng.Intn(8<<10))
				n, err := l.TarReadAt(ctx, p, off)
				want := tarData[off:min(off+int64(len(p)), int64(len(tarData)))]
				if err == nil || n > 0 {
					if !bytes.Equal(p[:n], want[:min(n, len(want))]) {
						t.Fatalf("TarReadAt(%d) over a spoilt checkpoint served %d wrong bytes (err %v)", off, n, err)
					}
				}
				if err != nil {
					if !errors.Is(err, errCorrupt) && !errors.Is(err, errTruncated) {
						t.Errorf("TarReadAt(%d): got %v, want a corrupt-stream error", off, err)
					}
					failed++
				}
			}
			if failed == 0 {
				t.Errorf("no read over a spoilt checkpoint failed")
			}
		})
	}
}
