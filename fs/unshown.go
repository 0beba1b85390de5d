package fs

import (
	"strings"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// maxNameLen is the longest name a directory entry may have (NAME_MAX):
// the kernel fails the whole listing over a longer one.
const maxNameLen = 255

// unshownNames counts the names a listing leaves out because no lookup
// could reach them (longer than NAME_MAX, or holding '/' or NUL, from a tar
// or a registry), so the others list, with one log line per listing.
type unshownNames struct {
	n       int
	example string // the first
}

// showable reports whether name can be listed, counting it if not.
func (u *unshownNames) showable(name string) bool {
	if len(name) <= maxNameLen && name != "" && !strings.ContainsAny(name, "/\x00") {
		return true
	}
	if u.n++; u.n == 1 {
		u.example = name
	}
	return false
}

// log logs the names left out of dir's listing, if any.
func (u *unshownNames) log(t *tree, dir *gofs.Inode) {
	if u.n == 0 {
		return
	}
	example := u.example
	if len(example) > 64 {
		example = example[:64] + "..."
	}
	t.log.WithField("path", "/"+dir.Path(nil)).Warnf("%d names not shown: longer than %d bytes or not a file name (the first: %q)", u.n, maxNameLen, example)
}
