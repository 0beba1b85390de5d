package tarlayout

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sort"
)

// blockSize is tar's unit: headers are whole blocks, contents are padded
// to one, and the archive ends with two zero blocks.
const blockSize = 512

// trailerSize is the end-of-archive marker archive/tar writes on Close.
const trailerSize = 2 * blockSize

// Layout is the placement of an archive's members. It is immutable and
// safe for concurrent use.
type Layout struct {
	members []member
	size    int64
}

// member is one member's place: its header bytes start at off, its
// content at off+len(header), and padding follows up to a block boundary.
type member struct {
	off    int64
	header []byte
	size   int64
}

func (m *member) contentOff() int64 { return m.off + int64(len(m.header)) }

func (m *member) end() int64 { return m.contentOff() + padded(m.size) }

func padded(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// New places members with headers hdrs, in order. A header archive/tar
// refuses is an error naming it; so is a negative size.
func New(hdrs []*tar.Header) (*Layout, error) {
	l := &Layout{members: make([]member, 0, len(hdrs))}
	var off int64
	for i, h := range hdrs {
		if h.Size < 0 {
			return nil, fmt.Errorf("tar member %d (%q): negative size %d", i, h.Name, h.Size)
		}
		var buf bytes.Buffer
		// WriteHeader writes the whole header (and any PAX or GNU records
		// it needs) at once; the content that would follow is not ours.
		if err := tar.NewWriter(&buf).WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar member %d (%q): %w", i, h.Name, err)
		}
		m := member{off: off, header: buf.Bytes(), size: h.Size}
		l.members = append(l.members, m)
		off = m.end()
	}
	l.size = off + trailerSize
	return l, nil
}

// Size is the archive's length in bytes.
func (l *Layout) Size() int64 { return l.size }

// Len is the number of members.
func (l *Layout) Len() int { return len(l.members) }

// ContentOffset is where member i's content starts in the archive.
func (l *Layout) ContentOffset(i int) int64 { return l.members[i].contentOff() }

// ContentFunc fills p with member i's content bytes [off, off+len(p)),
// all of them or an error.
type ContentFunc func(i int, p []byte, off int64) error

// ReadAt fills p with the archive's bytes from off, asking content only
// for the member bytes inside that range. It returns len(p), or fewer
// with io.EOF at the archive's end, or the first error content returns.
func (l *Layout) ReadAt(p []byte, off int64, content ContentFunc) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("tar read at negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= l.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := l.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n := 0
	// The first member whose bytes end after off.
	i := sort.Search(len(l.members), func(i int) bool { return l.members[i].end() > off })
	for n < len(p) {
		pos := off + int64(n)
		if i >= len(l.members) { // the trailer
			clear(p[n:])
			n = len(p)
			break
		}
		m := &l.members[i]
		var k int
		switch c := m.contentOff(); {
		case pos < c:
			k = copy(p[n:], m.header[pos-m.off:])
		case pos < c+m.size:
			k = int(min(int64(len(p)-n), c+m.size-pos))
			if err := content(i, p[n:n+k], pos-c); err != nil {
				return n, fmt.Errorf("tar member %d at %d: %w", i, pos-c, err)
			}
		default: // padding
			k = int(min(int64(len(p)-n), m.end()-pos))
			clear(p[n : n+k])
		}
		n += k
		if off+int64(n) >= m.end() {
			i++
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}
