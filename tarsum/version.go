package tarsum

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Version selects which header fields go into each entry's hash.
type Version int

const (
	// Version0 ("tarsum") hashes mtime and ignores extended attributes.
	Version0 Version = iota
	// Version1 ("tarsum.v1") drops mtime and adds the sorted xattrs.
	Version1
	// VersionDev ("tarsum.dev") is docker's floating next version; today it
	// computes exactly what Version1 does, under its own label.
	VersionDev
)

var versionLabels = [...]string{
	Version0:   "tarsum",
	Version1:   "tarsum.v1",
	VersionDev: "tarsum.dev",
}

// Versions lists every version this package implements.
func Versions() []Version { return []Version{Version0, Version1, VersionDev} }

// String is the version's label as it starts a checksum ("tarsum.v1").
func (v Version) String() string {
	if v < 0 || int(v) >= len(versionLabels) {
		return fmt.Sprintf("tarsum.Version(%d)", int(v))
	}
	return versionLabels[v]
}

func (v Version) valid() bool { return v >= 0 && int(v) < len(versionLabels) }

// Errors for checksum strings and options.
var (
	// ErrUnknownVersion: the version label is not tarsum, tarsum.v1 or tarsum.dev.
	ErrUnknownVersion = errors.New("unknown tarsum version")
	// ErrUnknownHash: the hash name is not one docker's labels use (sha256, sha512).
	ErrUnknownHash = errors.New("unknown tarsum hash")
	// ErrMalformedChecksum: the string is not "<version>+<hash>:<lower-case hex>".
	ErrMalformedChecksum = errors.New("malformed tarsum checksum")
)

// ParseVersion returns the version named by a label ("tarsum.v1"), or by the
// part before '+' of a label with hash ("tarsum.v1+sha256") or of a whole
// checksum ("tarsum.v1+sha256:<hex>").
func ParseVersion(s string) (Version, error) {
	label, _, _ := strings.Cut(s, "+")
	for v, l := range versionLabels {
		if l == label {
			return Version(v), nil
		}
	}
	return 0, fmt.Errorf("parse tarsum version %q: %w", label, ErrUnknownVersion)
}

// Algorithm is the hash used both for each entry and for the final sum.
type Algorithm struct {
	// Name appears in the checksum after '+' ("sha256").
	Name string
	// New returns a fresh hash.
	New func() hash.Hash
}

// SHA256 is the default and the only hash docker itself ever produced for layers.
var SHA256 = Algorithm{Name: "sha256", New: sha256.New}

// SHA512 is the other hash docker's checksum labels accept.
var SHA512 = Algorithm{Name: "sha512", New: sha512.New}

// HashByName returns the Algorithm for a hash name a checksum label may carry.
func HashByName(name string) (Algorithm, error) {
	switch name {
	case SHA256.Name:
		return SHA256, nil
	case SHA512.Name:
		return SHA512, nil
	}
	return Algorithm{}, fmt.Errorf("hash %q: %w", name, ErrUnknownHash)
}

// Checksum is a parsed checksum string "<version>+<hash>:<hex>".
type Checksum struct {
	Version Version
	Hash    Algorithm
	Hex     string // lower-case hex digest
}

// String formats the checksum the way Sum does.
func (c Checksum) String() string { return c.Version.String() + "+" + c.Hash.Name + ":" + c.Hex }

// ParseChecksum parses "<version>+<hash>:<hex>", checking the version and
// hash names and that the hex is lower case and as long as the hash's digest.
func ParseChecksum(s string) (Checksum, error) {
	label, hexSum, ok := strings.Cut(s, ":")
	if !ok {
		return Checksum{}, fmt.Errorf("parse tarsum %q: no ':' before the digest: %w", s, ErrMalformedChecksum)
	}
	versionName, hashName, ok := strings.Cut(label, "+")
	if !ok {
		return Checksum{}, fmt.Errorf("parse tarsum %q: no '+' between version and hash: %w", s, ErrMalformedChecksum)
	}
	v, err := ParseVersion(versionName)
	if err != nil {
		return Checksum{}, fmt.Errorf("parse tarsum %q: %w", s, err)
	}
	alg, err := HashByName(hashName)
	if err != nil {
		return Checksum{}, fmt.Errorf("parse tarsum %q: %w", s, err)
	}
	if want := 2 * alg.New().Size(); len(hexSum) != want {
		return Checksum{}, fmt.Errorf("parse tarsum %q: %s digest has %d hex digits, want %d: %w",
			s, hashName, len(hexSum), want, ErrMalformedChecksum)
	}
	for i := 0; i < len(hexSum); i++ {
		if c := hexSum[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return Checksum{}, fmt.Errorf("parse tarsum %q: digest byte %d (%q) is not lower-case hex: %w",
				s, i, c, ErrMalformedChecksum)
		}
	}
	return Checksum{Version: v, Hash: alg, Hex: hexSum}, nil
}
