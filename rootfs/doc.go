// Package rootfs merges an image's layer indexes into the filesystem they
// make together, as docker and containerd apply them (the OCI image spec's
// "Applying Changesets"): layers applied base first; a later entry replaces
// an earlier one at the same path (a directory over a directory keeps the
// children and takes the later metadata); a non-directory over a directory
// removes what was under it; ".wh.<name>" removes <name> from the layers
// below; ".wh..wh..opq" in a directory removes everything the layers below
// put in it. Whiteouts act only on the layers below their own and are never
// shown. It also resolves hardlinks across layers, counts links, and looks
// paths up following symlinks as the kernel would inside a chroot.
//
// It answers lazily, per path, from layerindex.Index values it is given:
// nothing is flattened up front. It must never read a blob, build an index,
// or know about FUSE: fs/ and cmd/ show and walk what it answers.
package rootfs
