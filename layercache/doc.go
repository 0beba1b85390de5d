// Package layercache turns "bytes [off, off+n) of blob K" into fixed-size,
// aligned blocks and serves them from a memory LRU, then a disk tier, then
// one ranged fetch per missing run of contiguous blocks from a Source.
//
// Blobs are content-addressed, but a Source is not trusted (trust.go): the
// cache hashes every in-order pass of a blob against blobio.Origin's digest
// and shares blocks beyond the host that served them (another registry, a
// later process, under the digest on disk) only once verified; a mismatch
// drops the blob's blocks and fails its reads. Options.Verify=VerifyStrict
// serves nothing unverified. Concurrent misses on one block, from any reader of the
// same key, share one fetch (single-flight). Sequential readers get adaptive
// readahead; one-pass consumers can keep their blocks out of the memory LRU
// (OpenOptions.SkipMemory).
//
// The disk tier (Options.DiskDir) stores one file per block, written to a
// temp file and renamed into place, with a trailer (magic, length, CRC-32C
// of the data and of the file's place) so a torn, garbage or misplaced file
// is never served. It is bounded (Options.DiskBytes)
// with LRU eviction, survives restarts, and is shared by every Cache and
// process that opens the same directory. Other packages (layerindex) keep
// their own files there through PutFile/GetFile, counted against the bound.
// DiskUsage and Clear back `regfs cache ls|du|clear`.
//
// A Cache is storage (store.go: the memory and disk tiers, keyed by blob
// and block) and scheduling (sched.go: single-flight, flights, streams,
// readahead), which reaches storage only through the small blockStore
// interface; a Reader (reader.go) is a thin front over both. The lock order
// is at the top of sched.go. docs/design/layercache.md tells the design.
//
// It must never parse tar or gzip, speak HTTP, return a byte it did not
// get whole from the Source or from a verified disk block (a short read from
// the Source is an error and is never cached), or let a byte not verified
// against its digest reach another origin.
package layercache
