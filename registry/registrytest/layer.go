package registrytest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// DefaultModTime is the mtime of entries that do not set one, so builds are
// reproducible.
var DefaultModTime = time.Date(2021, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry of a layer. Build entries with the constructors
// (File, Dir, Symlink, …) and adjust them with the With* methods, which
// return a modified copy.
type Entry struct {
	// Name is the path inside the layer, without a leading "/" (a trailing
	// "/" is added for directories when written).
	Name string
	// Type is the tar type flag: tar.TypeReg, TypeDir, TypeSymlink,
	// TypeLink, TypeChar, TypeBlock or TypeFifo.
	Type byte
	// Mode holds the permission bits with setuid (0o4000), setgid (0o2000)
	// and sticky (0o1000), as a tar header stores them.
	Mode     int64
	UID, GID int
	// Uname and Gname are the owner names; "" writes none.
	Uname, Gname string
	// ModTime defaults to DefaultModTime.
	ModTime time.Time
	// Content of a regular file; Gen, when set, takes its place.
	Content []byte
	Gen     *Generated
	// Linkname is the target of a symlink or hardlink.
	Linkname string
	// Devmajor and Devminor of a character or block device.
	Devmajor, Devminor int64
	// Xattrs are written as PAX records "SCHILY.xattr.<key>".
	Xattrs map[string]string
}

// File is a regular file (mode 0644) with content.
func File(name, content string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Content: []byte(content)}
}

// FileBytes is a regular file (mode 0644) with binary content.
func FileBytes(name string, content []byte) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Content: content}
}

// GeneratedFile is a regular file (mode 0644) of size bytes generated from
// seed (see Generated).
func GeneratedFile(name string, size int64, seed uint64, compressible bool) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644,
		Gen: &Generated{Seed: seed, Size: size, Compressible: compressible}}
}

// Dir is a directory (mode 0755).
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755} }

// Symlink is a symbolic link name → target (mode 0777).
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}

// Hardlink is a hard link name → target (a path in the same layer).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Linkname: target}
}

// CharDevice is a character device (mode 0666).
func CharDevice(name string, major, minor int64) Entry {
	return Entry{Name: name, Type: tar.TypeChar, Mode: 0o666, Devmajor: major, Devminor: minor}
}

// BlockDevice is a block device (mode 0660).
func BlockDevice(name string, major, minor int64) Entry {
	return Entry{Name: name, Type: tar.TypeBlock, Mode: 0o660, Devmajor: major, Devminor: minor}
}

// Fifo is a named pipe (mode 0644).
func Fifo(name string) Entry { return Entry{Name: name, Type: tar.TypeFifo, Mode: 0o644} }

// WhiteoutPrefix and OpaqueWhiteout are the OCI/AUFS whiteout names.
const (
	WhiteoutPrefix = ".wh."
	OpaqueWhiteout = ".wh..wh..opq"
)

// Whiteout deletes the lower layers' target (a file or a whole directory):
// an empty file "<dir>/.wh.<base>".
func Whiteout(target string) Entry {
	dir, base := path.Split(target)
	return Entry{Name: dir + WhiteoutPrefix + base, Type: tar.TypeReg, Mode: 0o644}
}

// Opaque hides everything the lower layers have under dir: an empty file
// "<dir>/.wh..wh..opq".
func Opaque(dir string) Entry {
	return Entry{Name: path.Join(dir, OpaqueWhiteout), Type: tar.TypeReg, Mode: 0o644}
}

// WithMode returns e with permission bits mode (setuid/setgid/sticky
// included).
func (e Entry) WithMode(mode int64) Entry { e.Mode = mode; return e }

// WithOwner returns e owned by uid:gid with names uname:gname.
func (e Entry) WithOwner(uid, gid int, uname, gname string) Entry {
	e.UID, e.GID, e.Uname, e.Gname = uid, gid, uname, gname
	return e
}

// WithModTime returns e with mtime t.
func (e Entry) WithModTime(t time.Time) Entry { e.ModTime = t; return e }

// WithXattr returns e with one more extended attribute.
func (e Entry) WithXattr(key, value string) Entry {
	x := make(map[string]string, len(e.Xattrs)+1)
	for k, v := range e.Xattrs {
		x[k] = v
	}
	x[key] = value
	e.Xattrs = x
	return e
}

// Size is the content size of a regular file, 0 for anything else.
func (e Entry) Size() int64 {
	if e.Type != tar.TypeReg {
		return 0
	}
	if e.Gen != nil {
		return e.Gen.Size
	}
	return int64(len(e.Content))
}

// Data returns the content of a regular file (generated if need be).
func (e Entry) Data() []byte {
	if e.Gen != nil {
		return e.Gen.Bytes()
	}
	return e.Content
}

// ReaderAt gives random access to the content of a regular file.
func (e Entry) ReaderAt() io.ReaderAt {
	if e.Gen != nil {
		return *e.Gen
	}
	return bytes.NewReader(e.Content)
}

// Mtime is ModTime, or DefaultModTime when unset.
func (e Entry) Mtime() time.Time {
	if e.ModTime.IsZero() {
		return DefaultModTime
	}
	return e.ModTime
}

// Header is the tar header written for e.
func (e Entry) Header() (*tar.Header, error) {
	name := strings.TrimPrefix(e.Name, "/")
	if name == "" || name == "." {
		return nil, fmt.Errorf("tar entry: empty name")
	}
	h := &tar.Header{
		Typeflag: e.Type,
		Name:     name,
		Linkname: e.Linkname,
		Mode:     e.Mode,
		Uid:      e.UID,
		Gid:      e.GID,
		Uname:    e.Uname,
		Gname:    e.Gname,
		ModTime:  e.Mtime(),
		Devmajor: e.Devmajor,
		Devminor: e.Devminor,
	}
	switch e.Type {
	case tar.TypeReg:
		h.Size = e.Size()
	case tar.TypeDir:
		if !strings.HasSuffix(h.Name, "/") {
			h.Name += "/"
		}
	case tar.TypeSymlink, tar.TypeLink:
		if e.Linkname == "" {
			return nil, fmt.Errorf("tar entry %s: link without target", name)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return nil, fmt.Errorf("tar entry %s: unsupported type %q", name, e.Type)
	}
	if len(e.Xattrs) > 0 {
		h.Format = tar.FormatPAX
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return h, nil
}

// WriteTar writes entries as an uncompressed tar stream (with the two zero
// blocks at the end).
func WriteTar(w io.Writer, entries []Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h, err := e.Header()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header %s: %w", e.Name, err)
		}
		if e.Type != tar.TypeReg {
			continue
		}
		if e.Gen != nil {
			_, err = e.Gen.WriteTo(tw)
		} else {
			_, err = tw.Write(e.Content)
		}
		if err != nil {
			return fmt.Errorf("tar content %s: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar close: %w", err)
	}
	return nil
}

// Compression is how a layer blob is compressed.
type Compression string

// The compressions a layer can have.
const (
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
	Uncompressed Compression = "none"
	// EStargz is gzip in eStargz layout (seekable, with a TOC); its layer
	// descriptor carries the TOC digest annotation.
	EStargz Compression = "estargz"
	// ZstdChunked is zstd in containers/storage's zstd:chunked layout (a
	// frame per file chunk, a TOC at the end); its layer descriptor
	// carries the TOC's checksum and position annotations.
	ZstdChunked Compression = "zstd:chunked"
)

// ManifestFormat chooses OCI or Docker schema2 media types.
type ManifestFormat string

// The manifest formats.
const (
	FormatOCI    ManifestFormat = "oci"
	FormatDocker ManifestFormat = "docker"
)

// Media types written by this package.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeOCILayer       = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd   = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGz  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// LayerSpec describes a layer to build.
type LayerSpec struct {
	Entries []Entry
	// Compression defaults to Gzip.
	Compression Compression
	// CreatedBy is the layer's history line (default "regfs test layer").
	CreatedBy string
}

// Layer is a built layer blob and what tests compare against.
type Layer struct {
	// Entries are the tar entries the layer was built from, in order (for
	// EStargz the blob holds them in eStargz order plus its TOC entries).
	Entries     []Entry
	Compression Compression
	CreatedBy   string

	// Digest and Size are those of the blob as pushed.
	Digest digest.Digest
	Size   int64
	// DiffID is the sha256 of the uncompressed tar, UncompressedSize its
	// length.
	DiffID           digest.Digest
	UncompressedSize int64
	// Annotations go on the layer's manifest descriptor (eStargz TOC
	// digest and uncompressed size).
	Annotations map[string]string

	// Blob holds the blob in memory; nil when it lives in BlobPath.
	Blob     []byte
	BlobPath string
}

// MediaType is the layer's media type in a manifest of format f; "" when f
// has none for this compression (Docker has no zstd type).
func (l *Layer) MediaType(f ManifestFormat) string {
	switch {
	case f == FormatDocker && (l.Compression == Gzip || l.Compression == EStargz):
		return MediaTypeDockerLayerGz
	case f == FormatDocker && l.Compression == Uncompressed:
		return MediaTypeDockerLayer
	case f == FormatDocker:
		return ""
	case l.Compression == Gzip || l.Compression == EStargz:
		return MediaTypeOCILayerGzip
	case l.Compression == Zstd || l.Compression == ZstdChunked:
		return MediaTypeOCILayerZstd
	case l.Compression == Uncompressed:
		return MediaTypeOCILayer
	}
	return ""
}

// OpenBlob streams the blob.
func (l *Layer) OpenBlob() (io.ReadCloser, error) {
	if l.Blob != nil || l.BlobPath == "" {
		return io.NopCloser(bytes.NewReader(l.Blob)), nil
	}
	f, err := os.Open(l.BlobPath)
	if err != nil {
		return nil, fmt.Errorf("open layer blob %s: %w", l.Digest, err)
	}
	return f, nil
}

// BlobBytes returns the whole blob (read from BlobPath if need be).
func (l *Layer) BlobBytes() ([]byte, error) {
	if l.Blob != nil || l.BlobPath == "" {
		return l.Blob, nil
	}
	b, err := os.ReadFile(l.BlobPath)
	if err != nil {
		return nil, fmt.Errorf("read layer blob %s: %w", l.Digest, err)
	}
	return b, nil
}

// WriteTarTo writes the uncompressed tar (whose sha256 is DiffID) to w,
// regenerating it rather than keeping it.
func (l *Layer) WriteTarTo(w io.Writer) error {
	if l.Compression != EStargz {
		return WriteTar(w, l.Entries)
	}
	// eStargz rewrites the tar; the blob is a series of gzip members.
	rc, err := l.OpenBlob()
	if err != nil {
		return err
	}
	defer rc.Close()
	zr, err := kgzip.NewReader(rc)
	if err != nil {
		return fmt.Errorf("estargz layer %s: %w", l.Digest, err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		return fmt.Errorf("estargz layer %s: %w", l.Digest, err)
	}
	return nil
}

// TarBytes returns the uncompressed tar; for small layers.
func (l *Layer) TarBytes() ([]byte, error) {
	var b bytes.Buffer
	if err := l.WriteTarTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// EStargzChunkSize is the eStargz chunk size used by BuildLayer: small, so
// that modest test files are split into several chunks.
const EStargzChunkSize = 16 << 10

// BuildLayer builds a layer blob in memory.
func BuildLayer(spec LayerSpec) (*Layer, error) {
	l := &Layer{Entries: spec.Entries, Compression: spec.Compression, CreatedBy: spec.CreatedBy}
	if l.Compression == "" {
		l.Compression = Gzip
	}
	if l.CreatedBy == "" {
		l.CreatedBy = "regfs test layer"
	}
	if l.Compression == EStargz {
		return l, l.buildEStargz()
	}
	if l.Compression == ZstdChunked {
		return l, l.buildZstdChunked()
	}
	var blob bytes.Buffer
	if err := l.build(&blob, kgzip.DefaultCompression); err != nil {
		return nil, err
	}
	l.Blob = blob.Bytes()
	return l, nil
}

// build streams tar → compressor → out, hashing both sides.
func (l *Layer) build(out io.Writer, gzipLevel int) error {
	blobHash, tarHash := sha256.New(), sha256.New()
	blobCount := &countWriter{w: io.MultiWriter(out, blobHash)}
	var (
		cw  io.WriteCloser
		err error
	)
	switch l.Compression {
	case Gzip:
		cw, err = kgzip.NewWriterLevel(blobCount, gzipLevel)
	case Zstd:
		cw, err = zstd.NewWriter(blobCount, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	case Uncompressed:
		cw = nopWriteCloser{blobCount}
	default:
		err = fmt.Errorf("unknown compression %q", l.Compression)
	}
	if err != nil {
		return fmt.Errorf("build layer: %w", err)
	}
	tarCount := &countWriter{w: io.MultiWriter(cw, tarHash)}
	if err := WriteTar(tarCount, l.Entries); err != nil {
		return fmt.Errorf("build layer: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("build layer: compress: %w", err)
	}
	l.Digest = hashDigest(blobHash)
	l.Size = blobCount.n
	l.DiffID = hashDigest(tarHash)
	l.UncompressedSize = tarCount.n
	return nil
}

func (l *Layer) buildEStargz() error {
	var tarBuf bytes.Buffer
	if err := WriteTar(&tarBuf, l.Entries); err != nil {
		return fmt.Errorf("build estargz layer: %w", err)
	}
	raw := tarBuf.Bytes()
	// A fixed parallelism keeps the blob the same on every machine.
	blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(raw), 0, int64(len(raw))),
		estargz.WithChunkSize(EStargzChunkSize), estargz.WithParallelism(2))
	if err != nil {
		return fmt.Errorf("build estargz layer: %w", err)
	}
	data, err := io.ReadAll(blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build estargz layer: %w", err)
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return fmt.Errorf("build estargz layer: %w", err)
	}
	l.Blob = data
	l.Digest = digest.FromBytes(data)
	l.Size = int64(len(data))
	l.DiffID = blob.DiffID()
	l.UncompressedSize = usize
	l.Annotations = map[string]string{
		estargz.TOCJSONDigestAnnotation:         blob.TOCDigest().String(),
		estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(usize, 10),
	}
	return nil
}

func (l *Layer) buildZstdChunked() error {
	var tarBuf bytes.Buffer
	if err := WriteTar(&tarBuf, l.Entries); err != nil {
		return fmt.Errorf("build zstd:chunked layer: %w", err)
	}
	blob, annotations, err := BuildZstdChunked(tarBuf.Bytes(), ZstdChunkedChunkSize)
	if err != nil {
		return fmt.Errorf("build zstd:chunked layer: %w", err)
	}
	l.Blob, l.Annotations = blob, annotations
	l.Digest, l.Size = digest.FromBytes(blob), int64(len(blob))
	l.DiffID, l.UncompressedSize = digest.FromBytes(tarBuf.Bytes()), int64(tarBuf.Len())
	return nil
}

func hashDigest(h hash.Hash) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// errUnsupported marks a request this package cannot build.
var errUnsupported = errors.New("unsupported")
