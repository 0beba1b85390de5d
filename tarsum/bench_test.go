package tarsum

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// benchBody is half random, half text, so gzip has something to do.
func benchBody(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if (i/4096)%2 == 0 {
			b[i] = byte(r.Uint32())
		} else {
			b[i] = "regfs mounts a registry "[i%24]
		}
	}
	return b
}

func benchArchives(b *testing.B) map[string][]byte {
	r := rand.New(rand.NewPCG(11, 12))
	one := buildTar(b, testEntry{name: "big", mode: 0o644, typeflag: tar.TypeReg, body: benchBody(r, 64<<20)})
	var many []testEntry
	for i := range 8192 {
		many = append(many, testEntry{name: fmt.Sprintf("usr/lib/f%05d", i), mode: 0o644, uname: "root", gname: "root",
			typeflag: tar.TypeReg, body: benchBody(r, 4096)})
	}
	return map[string][]byte{"one 64MiB file": one, "8192 files of 4KiB": buildTar(b, many...)}
}

// BenchmarkTarSum reports throughput in bytes of tar per second, plain and
// gzip input, next to a bare sha256 of the same bytes (the floor: tarsum
// hashes every body byte once).
func BenchmarkTarSum(b *testing.B) {
	for name, tarBytes := range benchArchives(b) {
		gz := gzipBytes(b, tarBytes)
		b.Run(name+"/sha256 baseline", func(b *testing.B) {
			b.SetBytes(int64(len(tarBytes)))
			for b.Loop() {
				h := sha256.New()
				h.Write(tarBytes)
				h.Sum(nil)
			}
		})
		for _, in := range []struct {
			kind  string
			input []byte
		}{{"plain", tarBytes}, {"gzip", gz}} {
			b.Run(name+"/"+in.kind, func(b *testing.B) {
				b.SetBytes(int64(len(tarBytes)))
				buf := make([]byte, 128<<10)
				for b.Loop() {
					ts, err := New(bytes.NewReader(in.input), Options{Version: Version1})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{ts}, buf); err != nil {
						b.Fatal(err)
					}
					ts.Sum(nil)
				}
			})
		}
	}
}
