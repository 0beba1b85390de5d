// Package fs maps a registry onto a read-only FUSE tree (go-fuse v2 nodes):
// repositories as path components (a repository's own holding _tags/ and
// _digests/), <repo>:<tag>/ and <repo>@<digest>/ image directories holding
// manifest.json, index.json, platforms/, config.json, json, ancestry and
// layers/<id>/{json,blob,layer.tar,digest}. A listing costs what it shows:
// the catalog for a directory of repositories, the tag list for _tags/.
// With Options.Repository the root is one repository (its tags) or, with
// Options.Reference, one image directory.
//
// It turns each FUSE operation into calls on the parts below it, all
// reached through one session.Session: metadata through its registry.Client
// (behind a small metadata cache in this package, see metacache.go), layer
// bytes through its block cache, layer.tar and the layers' own trees
// through its layer index handles, rootfs/ through its images' merged
// trees (package rootfs). Every operation that may wait on the network runs
// under Options.OpTimeout, and every error reaches the kernel through one
// function, toErrno.
//
// It must never speak HTTP, decompress, parse tar, merge layers or wire the
// parts itself: those belong to registry/, layerindex/, layercache/, rootfs/
// and session/. It never writes: every mutation is EROFS.
package fs
