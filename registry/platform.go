package registry

import (
	"fmt"
	"runtime"
	"strings"
)

// Platform is an os/arch[/variant] triple, as in an OCI index.
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// HostPlatform is the platform this binary runs on.
func HostPlatform() Platform {
	p := Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// ParsePlatform reads "os/arch[/variant]".
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	for _, p := range parts {
		if p == "" {
			return Platform{}, fmt.Errorf("platform %q: empty component", s)
		}
		// Index entries name platforms in these characters; anything else
		// (a space, a comma) would match none of them.
		for _, c := range p {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
				return Platform{}, fmt.Errorf("platform %q: component %q may hold only letters, digits, '_', '.' and '-' (e.g. linux/arm64/v8)", s, p)
			}
		}
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// String is "os/arch[/variant]".
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// DirName is "os-arch[-variant]", the name of its directory under platforms/.
func (p Platform) DirName() string {
	return strings.ReplaceAll(p.String(), "/", "-")
}
