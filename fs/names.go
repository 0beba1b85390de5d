package fs

import (
	"regexp"
	"strings"
)

var digestRE = regexp.MustCompile(`^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)

// isComponent reports whether s is one path component of a repository name
// (docker's reference grammar, which v1 names also satisfy):
// [a-z0-9]+ joined by '.', '_', "__" or one or more '-'. Hand code, not a
// regexp: listings check every name (TestNameChecksMatchGrammar holds it
// to the grammar's regexp).
func isComponent(s string) bool {
	sep := -1 // where the separator run before s[i] started, or -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			sep = -1
		case c == '.', c == '_', c == '-':
			switch {
			case i == 0:
				return false
			case sep < 0:
				sep = i
			case c != s[sep], c == '.', c == '_' && i-sep > 1:
				return false
			}
		default:
			return false
		}
	}
	return s != "" && sep < 0
}

// isTag reports whether s is a tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
func isTag(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

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
		return n, isComponent(n.component) && digestRE.MatchString(n.ref)
	}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		n := imageName{component: name[:i], ref: name[i+1:]}
		return n, isComponent(n.component) && isTag(n.ref)
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
	// FNV-1a 64 of each part and a 0 byte after it, as hash/fnv computes
	// it, without its allocations: every listed entry gets one.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			h ^= uint64(p[i])
			h *= prime
		}
		h *= prime // ^= 0
	}
	ino := h &^ (1 << 63)
	if ino < 2 {
		ino += 2
	}
	return ino
}
