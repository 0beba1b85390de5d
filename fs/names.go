package fs

import (
	"hash/fnv"
	"regexp"
	"strings"
)

var (
	// componentRE is one path component of a repository name (docker's
	// reference grammar, which v1 names also satisfy).
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE    = regexp.MustCompile(`^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)
)

// imageName is a directory name naming an image: <component>:<tag> or
// <component>@<digest>.
type imageName struct {
	component string
	ref       string // the tag or the digest string
	byDigest  bool
}

// parseImageName reads name as an image directory name; ok is false for
// anything else, including malformed tags and digests (they cannot exist).
func parseImageName(name string) (imageName, bool) {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		n := imageName{component: name[:i], ref: name[i+1:], byDigest: true}
		return n, componentRE.MatchString(n.component) && digestRE.MatchString(n.ref)
	}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		n := imageName{component: name[:i], ref: name[i+1:]}
		return n, componentRE.MatchString(n.component) && tagRE.MatchString(n.ref)
	}
	return imageName{}, false
}

func joinRepo(prefix, component string) string {
	if prefix == "" {
		return component
	}
	return prefix + "/" + component
}

// inoOf hashes a node's stable identity into an inode number: the same
// thing keeps the same number across lookups and mounts. The top bit stays
// clear (go-fuse hands out automatic numbers from 2^63) and 0/1 (root) are
// avoided.
func inoOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	ino := h.Sum64() &^ (1 << 63)
	if ino < 2 {
		ino += 2
	}
	return ino
}
