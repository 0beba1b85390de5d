// Package fs maps a registry onto a read-only FUSE tree (go-fuse v2 nodes):
// repositories as path components, <repo>:<tag>/ and <repo>@<digest>/ image
// directories holding manifest.json, index.json, platforms/, config.json,
// json, ancestry and layers/<id>/{json,blob,layer.tar,digest}.
//
// It turns each FUSE operation into calls on the parts below it: metadata
// through a registry.Client (behind a small metadata cache in this package,
// see metacache.go), layer bytes through layercache, uncompressed tar streams
// through layerindex. Every operation that may wait on the network runs under
// Options.OpTimeout, and every error reaches the kernel through one function,
// toErrno.
//
// It must never speak HTTP, decompress, or parse tar itself: those belong to
// registry/, layerindex/ and layercache/. It never writes: every mutation is
// EROFS.
package fs
