package registry

// Image references, parsed with docker's grammar (distribution/reference):
//
//	reference  := name [ ":" tag ] [ "@" digest ]
//	name       := [ domain "/" ] component ( "/" component )*
//	domain     := host [ ":" port ]   (a DNS name, an IPv4 address or [IPv6])
//	component  := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
//	tag        := [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
//	digest     := algorithm ":" hex, checked by go-digest
//
// Our own parser rather than github.com/distribution/reference: that one
// fixes the default registry to docker.io and answers every malformed input
// with "invalid reference format"; ours takes the default registry from the
// caller and says which part is wrong. The grammar is the same.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	// DockerHub is the registry name docker uses for Docker Hub.
	DockerHub = "docker.io"
	// maxNameLength is docker's bound on registry + "/" + repository.
	maxNameLength = 255
	// DefaultTag is what a reference with neither tag nor digest means.
	DefaultTag = "latest"
)

var (
	pathComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagRE           = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE        = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}$`)
	dnsHostRE       = regexp.MustCompile(`^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*$`)
	ipv6HostRE      = regexp.MustCompile(`^\[[0-9A-Fa-f:]+\]$`)
)

// Reference is a parsed image reference.
type Reference struct {
	// Registry is host[:port], "docker.io" for Docker Hub.
	Registry string
	// Repository is the path inside the registry, with "library/" added to
	// one-component names on Docker Hub.
	Repository string
	// Tag is "" when the reference has none.
	Tag string
	// Digest is "" when the reference has none.
	Digest digest.Digest
}

// Name is registry/repository.
func (r Reference) Name() string { return r.Registry + "/" + r.Repository }

// String is the full form: registry/repository[:tag][@digest].
func (r Reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Identifier is what to ask the registry for: the digest when there is
// one (it pins the content), else the tag, else "latest".
func (r Reference) Identifier() string {
	switch {
	case r.Digest != "":
		return r.Digest.String()
	case r.Tag != "":
		return r.Tag
	}
	return DefaultTag
}

// ReferenceError is a reference that does not parse; Part names the part
// that is wrong ("registry", "repository", "path component", "tag",
// "digest" or "reference" for the whole).
type ReferenceError struct {
	Input  string
	Part   string
	Value  string
	Reason string
}

func (e *ReferenceError) Error() string {
	if e.Part == "reference" {
		return fmt.Sprintf("invalid reference %q: %s", e.Input, e.Reason)
	}
	return fmt.Sprintf("invalid reference %q: %s %q: %s", e.Input, e.Part, e.Value, e.Reason)
}

// ParseReference parses what a docker user types: [host[:port]/]path[:tag][@digest].
// A first path component is a registry host, as docker decides, when it
// contains "." or ":", is "localhost", or has upper-case letters; otherwise
// the reference is in defaultRegistry (which may be "" to require a host).
func ParseReference(s, defaultRegistry string) (Reference, error) {
	fail := func(part, value, reason string) (Reference, error) {
		return Reference{}, &ReferenceError{Input: s, Part: part, Value: value, Reason: reason}
	}
	if s == "" {
		return fail("reference", "", "empty")
	}
	if strings.Contains(s, "://") {
		return fail("reference", s, "must not have a URL scheme: write host[:port]/path")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return fail("reference", s, fmt.Sprintf("contains the control or space character %q", r))
		}
	}

	var ref Reference
	name := s
	if at := strings.IndexByte(name, '@'); at >= 0 {
		d := name[at+1:]
		name = name[:at]
		if d == "" {
			return fail("digest", d, "empty after '@'")
		}
		if !digestRE.MatchString(d) {
			return fail("digest", d, "want algorithm:hex, e.g. sha256:<64 hex digits>")
		}
		dg, err := digest.Parse(d)
		if err != nil {
			return fail("digest", d, err.Error())
		}
		ref.Digest = dg
	}
	if name == "" {
		return fail("repository", "", "empty")
	}

	// A tag follows the last ':' after the last '/'; a ':' before that is
	// a registry port.
	if colon := strings.LastIndexByte(name, ':'); colon > strings.LastIndexByte(name, '/') {
		tag := name[colon+1:]
		name = name[:colon]
		if tag == "" {
			return fail("tag", tag, "empty after ':'")
		}
		if !tagRE.MatchString(tag) {
			return fail("tag", tag, "want [A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
		}
		ref.Tag = tag
	}

	domain, path := splitDomain(name)
	if domain == "" {
		domain = defaultRegistry
		if domain == "" {
			return fail("registry", "", "none given and no default registry")
		}
	}
	if err := checkRegistryHost(domain); err != nil {
		return fail("registry", domain, err.Error())
	}
	if domain == "index.docker.io" {
		domain = DockerHub
	}
	if path == "" {
		return fail("repository", path, "empty")
	}
	for _, comp := range strings.Split(path, "/") {
		if comp == "" {
			return fail("repository", path, "empty path component (leading, trailing or double '/')")
		}
		if !pathComponentRE.MatchString(comp) {
			reason := "want lower-case letters and digits, separated by '.', '_', '__' or dashes"
			if strings.ToLower(comp) != comp {
				reason = "must be lower case"
			}
			return fail("path component", comp, reason)
		}
	}
	if domain == DockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	if n := len(domain) + 1 + len(path); n > maxNameLength {
		return fail("repository", path, fmt.Sprintf("name is %d characters, more than %d", n, maxNameLength))
	}
	ref.Registry, ref.Repository = domain, path
	return ref, nil
}

// ParseRegistryOrReference reads what `regfs mount` takes: a registry
// host[:port] alone (a Reference with no Repository), or an image or
// repository reference in docker's syntax, Docker Hub by default. Without a
// '/' (one trailing '/' aside), s is a registry whenever it is a valid
// host[:port], so "ghcr.io", "localhost:5000", "alpine" and "node:20" are
// registries; "alpine:3.19" (a tag that is not a port) and "alpine@<digest>"
// are Docker Hub's. Write "library/node:20" or "docker.io/node:20" for
// Docker Hub's node:20.
func ParseRegistryOrReference(s string) (Reference, error) {
	if host := strings.TrimSuffix(s, "/"); !strings.ContainsAny(host, "/@") && host != "" && checkRegistryHost(host) == nil {
		return Reference{Registry: host}, nil
	}
	return ParseReference(s, DockerHub)
}

// splitDomain splits off a registry host the way docker does.
func splitDomain(name string) (domain, path string) {
	i := strings.IndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	first := name[:i]
	if !strings.ContainsAny(first, ".:") && first != "localhost" && strings.ToLower(first) == first {
		return "", name
	}
	return first, name[i+1:]
}

// checkRegistryHost validates host[:port]: a DNS name, IPv4 address or
// [IPv6] address, and a port in 1..65535.
func checkRegistryHost(hostport string) error {
	host, port := hostport, ""
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return fmt.Errorf("unclosed '[' in IPv6 address")
		}
		host, port = hostport[:end+1], hostport[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return fmt.Errorf("want [IPv6]:port")
		}
		port = strings.TrimPrefix(port, ":")
		if !ipv6HostRE.MatchString(host) {
			return fmt.Errorf("bad IPv6 address")
		}
	} else if c := strings.IndexByte(hostport, ':'); c >= 0 {
		host, port = hostport[:c], hostport[c+1:]
		if port == "" {
			return fmt.Errorf("empty port after ':'")
		}
	}
	if !strings.HasPrefix(host, "[") && !dnsHostRE.MatchString(host) {
		return fmt.Errorf("want a host name or IP address, letters, digits, '-' and '.'")
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || port[0] == '+' {
			return fmt.Errorf("port %q: want a number in 1..65535", port)
		}
	}
	return nil
}

// checkRepository validates a repository path as the client receives it.
func checkRepository(repo string) error {
	if repo == "" {
		return fmt.Errorf("repository name is empty")
	}
	for _, comp := range strings.Split(repo, "/") {
		if !pathComponentRE.MatchString(comp) {
			return fmt.Errorf("repository %q: bad path component %q (lower-case letters, digits, separators)", repo, comp)
		}
	}
	if len(repo) > maxNameLength {
		return fmt.Errorf("repository %q: longer than %d characters", repo, maxNameLength)
	}
	return nil
}
