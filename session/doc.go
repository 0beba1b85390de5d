// Package session wires the parts that serve one registry's layers, once:
// a registry client, the block cache in front of its blobs, and the layer
// index manager reading through that cache. It hands out the handles the
// rest of regfs reads through: a Layer (its blob, a cache reader with the
// OpenOptions the caller asks for, its layerindex.Layer) and an Image (its
// layers and their merged rootfs.Merged tree), each shared by every caller
// of one Session.
//
// fs/ (a mount) and cmd/regfs (prefetch) both read layers through it, so
// the order registry → cache → index, the cache's OpenOptions for index
// passes and the index's read size (the cache's block size) are decided
// here and nowhere else.
//
// With a metadata store (Options.Meta) its Client records what the
// registry says about names and, while the registry cannot be reached,
// answers tags, tag lists and the catalog from those records (offline.go):
// the policy of serving stale answers lives here, the records in metastore.
//
// It must never speak FUSE, parse flags, or read bytes itself: it connects
// the parts and keeps the handles, and the parts do the work.
package session
