// Package metastore keeps what regfs learned about images from a registry
// across runs, in a directory beside the block cache (--cache-dir/meta):
//
//   - content by digest: manifests, indexes and image configs exactly as
//     served, one file each, checked against their digest whenever read
//     back (a file that does not hash to its name is removed, never
//     served). Store implements registry.ContentStore with it.
//   - references: which digest a registry's repo:tag named, and when it
//     said so; and which repo@digest references were resolved. These let a
//     mount answer a tag with the registry down (session serves them stale
//     then) and let `regfs cache ls` name the images a blob belongs to.
//
// It is its own package because it has one job, the persistence of
// registry metadata, that neither registry (HTTP, no files) nor layercache
// (blocks of blob bytes, never parses) should take on.
//
// It must never speak HTTP or decide when a stored answer may be served:
// that policy is session's. A write that fails only loses the chance to
// serve the answer later: it is logged at debug and otherwise ignored.
package metastore
