// Package tarlayout places the members of a tar archive without their
// contents: given each member's header (and so its size), it knows the
// archive's exact size and which bytes of which member, header or padding
// any offset holds. A file served as a tar can then answer a ranged read
// by reading only the member bytes the range covers.
//
// It never reads member contents itself and holds no I/O: the caller
// supplies a member's bytes on demand. Header bytes are the ones
// archive/tar writes, so an archive read through a Layout equals the one
// archive/tar would write for the same headers and contents.
package tarlayout
