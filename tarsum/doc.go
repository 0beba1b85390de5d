// Package tarsum computes docker's TarSum layer checksums ("tarsum+sha256:…",
// "tarsum.v1+sha256:…", "tarsum.dev+sha256:…") over a layer tar stream, so a
// layer fetched through the legacy v1 registry API can be checked against the
// checksum its repository lists while it streams.
//
// # The algorithm (docker's pkg/tarsum/tarsum_spec.md)
//
// Every entry of the archive gets its own hash: first its header fields, each
// written as key then value with no separator, in this order
//
//	name mode uid gid size mtime typeflag linkname uname gname devmajor devminor
//
// (numbers in base 10, mtime in seconds since the epoch, typeflag as its one
// byte); Version1 and VersionDev leave out mtime and append the extended
// attributes (PAX "SCHILY.xattr.<key>" records) as <key><value>, sorted by key.
// Then the entry's body (the logical file contents). The hex digests of all
// entries are sorted as strings; entries that share a path keep their order
// of occurrence among the places their sums sort to. The final digest hashes
// the caller's extra bytes (docker's v1 push used the image JSON) and then
// each hex digest in that order, and is written "<version>+<hash>:<hex>".
// An archive without entries sums to the hash of the extra bytes alone; the
// end-of-archive blocks and any padding after them are never hashed.
//
// Two details differ between docker releases; the defaults follow the
// specification and the docker releases that filled v1 registries (built
// with Go before 1.10), and Options can select current moby's behaviour:
// moby since 2018 hashes uname and gname as empty (Options.IgnoreOwnerNames)
// and, built with current Go, hashes the pre-POSIX regular-file typeflag
// '\x00' as '0' ('5' for names ending in "/") (Options.PromoteLegacyTypeflag).
// Docker's ordering of same-path entries depends on its sort algorithm when
// the path order and the digest order disagree; this package uses the
// deterministic order above, which equals docker's whenever docker's is
// well defined. Archives are read with Go's archive/tar, as current moby
// does: GNU and PAX long names, PAX overrides and sparse files (hashed as
// their expanded contents) come out as in moby; a PAX global header is an
// entry of its own, as Go's reader returns it.
//
// # Streaming
//
// A TarSum is an io.Reader that passes the input bytes through unchanged
// (gzip-compressed input stays compressed) while it hashes the tar inside, so
// the same pass can also feed a cache or a sha256 of the blob. Plain and
// gzip-compressed tars are recognised by their first bytes. Sum is final once
// Read has returned io.EOF. Verify reads a whole stream and compares it with a
// checksum string, whose prefix picks the version and hash:
//
//	ts, _ := tarsum.New(body, tarsum.Options{Version: tarsum.Version1})
//	io.Copy(cacheFile, ts)              // the layer bytes, unchanged
//	ok := ts.Sum(nil) == want
//
//	err := tarsum.Verify(ctx, body, layer.Checksum, layer.JSON) // docker v1: JSON is the extra
//
// It must never panic, and Compute and Verify must never succeed on input it
// could not parse: a corrupt, truncated or unsupported stream is a Read error
// wrapping ErrCorrupt (or
// ErrUnsupportedCompression), and a failure of the underlying reader is
// returned as that reader's error, not as corruption. It never writes the
// input anywhere, never re-encodes it, and does no network I/O itself.
package tarsum
