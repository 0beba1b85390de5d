// Package layerindex gives the uncompressed views of a layer blob: the whole
// tar stream (layer.tar) at any offset, and an index of the tar's entries
// with a blobio.ReaderAt over each file's content.
//
// It reads the stored (compressed) bytes through a Blob, normally a
// layercache.Reader, in large aligned spans so the cache and the registry see few
// requests. Compression is detected by magic bytes: gzip, zstd or none.
// Small reads far apart (the format probe, an eStargz footer and TOC, a
// small file's chunks) ask for exactly their bytes (Blob.ReadExact). eStargz blobs are read through their TOC, chunks
// checked against their TOC digests, contiguous chunks of one read fetched
// together; the TOC JSON is parsed here, so a hardlink into a lower layer is
// accepted as in any layer tar. Plain gzip blobs get a
// checkpoint index (zran): at spaced points the compressed bit offset, the
// uncompressed offset and the last 32 KiB of output, so a later read inflates
// from the nearest checkpoint instead of the start of the blob. zstd blobs
// restart at frame starts; where a frame is long (one-frame blobs), decoded
// spans that reads touched are kept in a bounded LRU. Uncompressed tars are
// indexed from their headers alone. A layer.tar reader of a layer whose
// index pass is running (a read starts it) takes the pass's output from a
// bounded ring instead of inflating the blob a second time. Indexes are built once per blob key
// (single-flight), kept in a bounded LRU and persisted (Options.Store,
// normally layercache's disk tier, or files under Options.Dir). Decoders
// of the tar stream come from one pool per Manager, bounded by
// Options.MaxCursors with their buffers reused: many parallel readers wait
// for a decoder rather than each holding megabytes of their own.
//
// It must never speak HTTP, cache compressed blocks (layercache does), or
// return a byte it could not decode and check: a truncated or corrupt blob is
// an error, never wrong data.
package layerindex
