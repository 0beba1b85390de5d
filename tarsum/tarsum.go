package tarsum

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"

	"github.com/klauspost/compress/gzip"
)

// Errors a TarSum's Read returns, wrapped with the entry and offset.
var (
	// ErrCorrupt: the tar (or its gzip wrapping) is malformed or truncated.
	ErrCorrupt = errors.New("corrupt or truncated tar stream")
	// ErrUnsupportedCompression: the input is compressed with something other than gzip.
	ErrUnsupportedCompression = errors.New("unsupported compression")
)

// Options configure a TarSum. The zero value is Version0 with SHA256, as the
// specification and docker's v1 push define it.
type Options struct {
	// Version selects the header fields hashed; default Version0.
	Version Version
	// Hash is used for every entry and for the final sum; default SHA256.
	Hash Algorithm
	// IgnoreOwnerNames hashes uname and gname as empty, as moby does since
	// 2018 (builds with Go 1.10 or later). Default false: the specification
	// and the docker releases of the v1 registry era hash them.
	IgnoreOwnerNames bool
	// PromoteLegacyTypeflag hashes the pre-POSIX regular-file typeflag
	// '\x00' as '0' ('5' for names ending in "/"), as moby built with current
	// Go does. Default false: hash the byte the archive stores, as docker
	// built with the Go of its time did.
	PromoteLegacyTypeflag bool
}

// bodyChunk bounds how much one step reads, and so how much a Read may
// buffer beyond what the caller asked for.
const bodyChunk = 32 << 10

type state int

const (
	stateStart   state = iota // input format not yet known
	stateHeader               // next: read an entry header
	stateBody                 // next: hash more of the current entry's body
	stateTrailer              // archive ended: pass the remaining input through
	stateDone
)

// TarSum passes a tar stream through unchanged while computing its tarsum.
// It is not safe for concurrent use.
type TarSum struct {
	opts Options

	src     *sourceReader // caller's reader; copies what it reads into pending
	pending bytes.Buffer  // input bytes not yet returned by Read
	br      *bufio.Reader
	gz      *gzipMembers // nil for plain tar
	rec     *headerRecorder
	tr      *tar.Reader

	state   state
	err     error // sticky; io.EOF once done
	entry   hash.Hash
	current FileSum
	files   []FileSum
	scratch []byte
	chunk   []byte
}

// New returns a TarSum reading from r. It does no I/O until the first Read.
func New(r io.Reader, opts Options) (*TarSum, error) {
	if !opts.Version.valid() {
		return nil, fmt.Errorf("new tarsum: %w: %v", ErrUnknownVersion, opts.Version)
	}
	if opts.Hash.New == nil {
		if opts.Hash.Name != "" && opts.Hash.Name != SHA256.Name {
			return nil, fmt.Errorf("new tarsum: hash %q has no constructor: %w", opts.Hash.Name, ErrUnknownHash)
		}
		opts.Hash = SHA256
	}
	if opts.Hash.Name == "" {
		return nil, fmt.Errorf("new tarsum: hash has no name: %w", ErrUnknownHash)
	}
	ts := &TarSum{opts: opts, entry: opts.Hash.New()}
	ts.src = &sourceReader{r: r, out: &ts.pending}
	return ts, nil
}

// Version is the version this TarSum computes.
func (ts *TarSum) Version() Version { return ts.opts.Version }

// Hash is the algorithm this TarSum uses.
func (ts *TarSum) Hash() Algorithm { return ts.opts.Hash }

// Compressed reports whether the input was recognised as gzip (known after
// the first Read).
func (ts *TarSum) Compressed() bool { return ts.gz != nil }

// Done reports whether the whole input has been read and Sum is final.
func (ts *TarSum) Done() bool { return ts.state == stateDone }

// Read returns the input bytes unchanged. It returns io.EOF once the input
// is exhausted and the archive parsed; any parse error is returned after the
// bytes read before it, and then on every later call.
func (ts *TarSum) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for ts.pending.Len() == 0 {
		if ts.err != nil {
			return 0, ts.err
		}
		ts.err = ts.step()
	}
	return ts.pending.Read(p)
}

// Sum returns "<version>+<hash>:<hex>" over extra (nil for none) and the
// entries read so far; it is the archive's tarsum once Read returned io.EOF.
// docker's v1 push passed the image JSON as extra.
func (ts *TarSum) Sum(extra []byte) string {
	h := ts.opts.Hash.New()
	h.Write(extra)
	for _, f := range orderForFinalSum(ts.files) {
		io.WriteString(h, f.Sum)
	}
	return ts.opts.Version.String() + "+" + ts.opts.Hash.Name + ":" + hex.EncodeToString(h.Sum(nil))
}

// Files returns the entries' digests in archive order.
func (ts *TarSum) Files() []FileSum { return slices.Clone(ts.files) }

// step advances the parser by one header or one chunk of data. Whatever
// input it pulls lands in ts.pending through ts.src.
func (ts *TarSum) step() error {
	switch ts.state {
	case stateStart:
		return ts.start()
	case stateHeader:
		return ts.nextEntry()
	case stateBody:
		n, err := ts.tr.Read(ts.chunk)
		ts.entry.Write(ts.chunk[:n])
		if err == io.EOF {
			ts.current.Sum = hex.EncodeToString(ts.entry.Sum(ts.scratch[:0]))
			ts.files = append(ts.files, ts.current)
			ts.state = stateHeader
			return nil
		}
		if err != nil {
			return ts.fail(fmt.Sprintf("read body of entry %d %q", ts.current.Position, ts.current.Name), err)
		}
		return nil
	case stateTrailer:
		return ts.drain()
	}
	return io.EOF
}

// start recognises the input format from its first bytes.
func (ts *TarSum) start() error {
	ts.chunk = make([]byte, bodyChunk)
	ts.br = bufio.NewReaderSize(ts.src, 64<<10)
	magic, err := ts.br.Peek(blockSize)
	if err != nil && err != io.EOF {
		return ts.fail("read start of input", err)
	}
	tarStream := io.Reader(ts.br)
	switch {
	case len(magic) == blockSize && validHeaderChecksum((*[blockSize]byte)(magic)):
		// A tar whose first name happens to start like a compression magic.
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(ts.br)
		if err != nil {
			return ts.fail("read gzip header", err)
		}
		z.Multistream(false)
		ts.gz = &gzipMembers{z: z, br: ts.br}
		tarStream = ts.gz
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return fmt.Errorf("tarsum: input is zstd-compressed; only plain and gzip tar are read: %w", ErrUnsupportedCompression)
	case bytes.HasPrefix(magic, []byte("BZh")):
		return fmt.Errorf("tarsum: input is bzip2-compressed; only plain and gzip tar are read: %w", ErrUnsupportedCompression)
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return fmt.Errorf("tarsum: input is xz-compressed; only plain and gzip tar are read: %w", ErrUnsupportedCompression)
	}
	ts.rec = &headerRecorder{r: tarStream}
	ts.tr = tar.NewReader(ts.rec)
	ts.state = stateHeader
	return nil
}

func (ts *TarSum) nextEntry() error {
	h, err := ts.tr.Next()
	if err == io.EOF {
		ts.state = stateTrailer
		return nil
	}
	// An absolute or ".." name is data to hash here, not a path to refuse.
	if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && h != nil) {
		return ts.fail(fmt.Sprintf("read header of entry %d", len(ts.files)), err)
	}
	typeflag := h.Typeflag
	if !ts.opts.PromoteLegacyTypeflag {
		typeflag = ts.rec.storedTypeflag(h)
	}
	ts.scratch = appendHeaderFields(ts.scratch[:0], h, typeflag, ts.opts.Version, ts.opts.IgnoreOwnerNames)
	ts.entry.Reset()
	ts.entry.Write(ts.scratch)
	ts.current = FileSum{Name: entryPath(h.Name), Position: len(ts.files)}
	ts.state = stateBody
	return nil
}

// drain reads what follows the end-of-archive marker: the rest of the gzip
// stream (so its CRC is checked) and then the rest of the input, none of
// which is hashed.
func (ts *TarSum) drain() error {
	if ts.gz != nil && !ts.gz.done {
		_, err := ts.gz.Read(ts.chunk)
		if err != nil && err != io.EOF {
			return ts.fail("read gzip stream after end of archive", err)
		}
		return nil
	}
	_, err := ts.br.Read(ts.chunk)
	switch {
	case err == nil:
		return nil
	case err == io.EOF:
		ts.state = stateDone
		return io.EOF
	default:
		return ts.fail("read input after end of archive", err)
	}
}

// fail wraps err: a failure of the caller's reader is returned as such;
// anything else means the stream itself is bad.
func (ts *TarSum) fail(what string, err error) error {
	if ts.src.err != nil {
		return fmt.Errorf("tarsum: %s: read input at byte %d: %w", what, ts.src.n, ts.src.err)
	}
	if ts.rec != nil {
		return fmt.Errorf("tarsum: %s at tar offset %d: %w: %w", what, ts.rec.off, ErrCorrupt, err)
	}
	return fmt.Errorf("tarsum: %s: %w: %w", what, ErrCorrupt, err)
}

// sourceReader copies every byte read from the caller's reader into out and
// remembers the reader's first error other than io.EOF.
type sourceReader struct {
	r   io.Reader
	out *bytes.Buffer
	n   int64
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n < 0 || n > len(p) {
		s.err = fmt.Errorf("reader returned count %d for a buffer of %d", n, len(p))
		return 0, s.err
	}
	s.out.Write(p[:n])
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// gzipMembers decompresses a series of gzip members, checking each one's CRC
// and size. Bytes after a complete member that do not start another member
// end the stream without an error: docker never read past the tar's end, so
// such padding never made a layer invalid; they are passed through unhashed.
type gzipMembers struct {
	z    *gzip.Reader
	br   *bufio.Reader
	done bool
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for !g.done {
		n, err := g.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		// The member ended and verified; is another one next?
		if err := g.z.Reset(g.br); err != nil {
			g.done = true
		} else {
			g.z.Multistream(false)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}
