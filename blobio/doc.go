// Package blobio declares the one contract regfs's layers share for bytes
// read by range: registry blobs implement Source, the block cache consumes
// a Source and hands out a ReaderAt, the layer index consumes that and hands
// out ReaderAts over uncompressed content, and fs serves them.
//
// It holds interfaces only, so that registry, layercache and layerindex stay
// leaves that never import one another.
package blobio
