// Package layerindex gives the uncompressed views of a layer blob: the whole
// tar stream (layer.tar) at any offset, and an index of the tar's entries
// with a blobio.ReaderAt over each file's content.
//
// It reads the stored bytes through a Blob, normally a layercache.Reader:
// passes and decoders in aligned spans of Options.ReadSize, small reads far
// apart (a format probe, an eStargz footer and TOC, a small file's chunks)
// with ReadExact. Compression is detected by magic bytes: gzip, zstd or
// none. A gzip blob's index pass records checkpoints (zran) a later read
// resumes from; a zstd blob restarts at frame starts, with decoded spans of
// long frames kept in a bounded LRU; an uncompressed tar is indexed from its
// headers alone. eStargz blobs are read through their TOC, each chunk
// checked against its TOC digest. A TarReader opened while a gzip pass runs
// takes the pass's output from a bounded ring instead of decoding again.
//
// Indexes are built once per blob key (single flight), kept in a bounded
// LRU and persisted (Options.Store or Options.Dir); a damaged or older-format
// file is ignored and rebuilt. An index published in the registry
// (LayerOptions.Published) serves a gzip layer before any pass; each file
// it opens is checked against the tar before a byte is served. Decoders come from a pool bounded by
// Options.MaxCursors. docs/design/layerindex.md has the design notes.
//
// It must never speak HTTP, cache compressed blocks (layercache does), or
// return a byte it could not decode and check: a truncated or corrupt blob is
// an error, never wrong data.
package layerindex
