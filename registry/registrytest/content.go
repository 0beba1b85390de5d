package registrytest

import (
	"fmt"
	"io"
)

// Generated is deterministic file content: Size bytes made from Seed, either
// random-looking (incompressible) or text-like (compressible). Any byte range
// can be produced on its own (it is a ReaderAt), so a test can check a slice
// of a large file without generating the rest.
type Generated struct {
	Seed         uint64
	Size         int64
	Compressible bool
}

// generatedBlock is the unit generated from one PRNG seed; ReadAt cost is
// one block at most of waste at each end.
const generatedBlock = 4096

// ReadAt fills p with the content at off, as io.ReaderAt does.
func (g Generated) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("generated content: negative offset %d", off)
	}
	if off >= g.Size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if rest := g.Size - off; int64(want) > rest {
		want = int(rest)
	}
	var block [generatedBlock]byte
	n := 0
	for n < want {
		pos := off + int64(n)
		b := pos / generatedBlock
		g.fillBlock(block[:], b)
		n += copy(p[n:want], block[pos-b*generatedBlock:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteTo writes the whole content to w.
func (g Generated) WriteTo(w io.Writer) (int64, error) {
	var block [generatedBlock]byte
	var written int64
	for b := int64(0); written < g.Size; b++ {
		g.fillBlock(block[:], b)
		n := int64(generatedBlock)
		if rest := g.Size - written; rest < n {
			n = rest
		}
		m, err := w.Write(block[:n])
		written += int64(m)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// Bytes returns the whole content; for small sizes.
func (g Generated) Bytes() []byte {
	p := make([]byte, g.Size)
	_, _ = g.ReadAt(p, 0)
	return p
}

// splitmix64 is a tiny, fast, well-mixed PRNG step; its output format is
// fixed forever because cached test blobs depend on it.
func splitmix64(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// generatedWords is the vocabulary of compressible content.
var generatedWords = [...]string{
	"registry", "layer", "blob", "manifest", "digest", "index", "config", "tar",
	"gzip", "range", "cache", "block", "mount", "fuse", "inode", "read",
	"the", "of", "and", "a", "to", "in", "is", "it",
	"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
	"0", "1", "42", "1024", "65536", "sha256", "regfs", "image",
	"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
	"path", "file", "dir", "link", "node", "entry", "offset", "size",
	"north", "south", "east", "west", "up", "down", "left", "right",
}

func (g Generated) fillBlock(p []byte, block int64) {
	state := g.Seed*0x2545f4914f6cdd1d ^ uint64(block)*0x9e3779b97f4a7c15
	if !g.Compressible {
		for i := 0; i < len(p); i += 8 {
			v := splitmix64(&state)
			for j := 0; j < 8 && i+j < len(p); j++ {
				p[i+j] = byte(v >> (8 * j))
			}
		}
		return
	}
	i, col := 0, 0
	for i < len(p) {
		v := splitmix64(&state)
		for k := 0; k < 4 && i < len(p); k++ {
			w := generatedWords[(v>>(k*8))&63]
			i += copy(p[i:], w)
			col += len(w) + 1
			if i < len(p) {
				if col > 72 {
					p[i] = '\n'
					col = 0
				} else {
					p[i] = ' '
				}
				i++
			}
		}
	}
}
