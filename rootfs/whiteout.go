package rootfs

import (
	"path"
	"strings"
)

const (
	// WhiteoutPrefix marks a deletion of the name after it.
	WhiteoutPrefix = ".wh."
	// OpaqueWhiteout in a directory hides the lower layers' content of it.
	OpaqueWhiteout = ".wh..wh..opq"
)

// IsWhiteout reports whether a path's last element is a whiteout or an
// opaque marker.
func IsWhiteout(name string) bool {
	return strings.HasPrefix(path.Base(name), WhiteoutPrefix)
}
