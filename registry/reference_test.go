package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestParseReference(t *testing.T) {
	tests := []struct {
		in, def string
		want    Reference
		str     string // String(); "" → not checked
		ident   string
	}{
		{in: "busybox", def: "docker.io", want: Reference{Registry: "docker.io", Repository: "library/busybox"},
			str: "docker.io/library/busybox", ident: "latest"},
		{in: "busybox:1.36", def: "docker.io", want: Reference{Registry: "docker.io", Repository: "library/busybox", Tag: "1.36"}, ident: "1.36"},
		{in: "user/app:v2", def: "docker.io", want: Reference{Registry: "docker.io", Repository: "user/app", Tag: "v2"}},
		{in: "index.docker.io/busybox", def: "", want: Reference{Registry: "docker.io", Repository: "library/busybox"}},
		{in: "docker.io/library/busybox:latest", def: "x.io", want: Reference{Registry: "docker.io", Repository: "library/busybox", Tag: "latest"}},
		{in: "busybox", def: "127.0.0.1:5000", want: Reference{Registry: "127.0.0.1:5000", Repository: "busybox"}},
		{in: "127.0.0.1:5000/test/small:latest", def: "docker.io", want: Reference{Registry: "127.0.0.1:5000", Repository: "test/small", Tag: "latest"}},
		{in: "localhost/app", def: "docker.io", want: Reference{Registry: "localhost", Repository: "app"}},
		{in: "localhost:5000/a/b/c", def: "", want: Reference{Registry: "localhost:5000", Repository: "a/b/c"}},
		{in: "ghcr.io/o/r@sha256:" + hexA, def: "docker.io",
			want:  Reference{Registry: "ghcr.io", Repository: "o/r", Digest: "sha256:" + hexA},
			ident: "sha256:" + hexA},
		{in: "ghcr.io/o/r:t@sha256:" + hexA, def: "docker.io",
			want: Reference{Registry: "ghcr.io", Repository: "o/r", Tag: "t", Digest: "sha256:" + hexA},
			str:  "ghcr.io/o/r:t@sha256:" + hexA, ident: "sha256:" + hexA},
		{in: "[::1]:5000/app:x", def: "", want: Reference{Registry: "[::1]:5000", Repository: "app", Tag: "x"}},
		{in: "Registry.Example.COM/app", def: "", want: Reference{Registry: "Registry.Example.COM", Repository: "app"}},
		// Docker treats an upper-case first component as a host.
		{in: "Foo/bar", def: "docker.io", want: Reference{Registry: "Foo", Repository: "bar"}},
		{in: "a.b-c.d--e/f_g.h", def: "r.io", want: Reference{Registry: "a.b-c.d--e", Repository: "f_g.h"}},
		{in: "r.io/a-b/c__d/e.f", def: "", want: Reference{Registry: "r.io", Repository: "a-b/c__d/e.f"}},
		{in: "r.io", def: "x.io", want: Reference{Registry: "x.io", Repository: "r.io"}},
		{in: "app:" + strings.Repeat("t", 128), def: "r.io", want: Reference{Registry: "r.io", Repository: "app", Tag: strings.Repeat("t", 128)}},
		{in: "app:_Tag.1-x", def: "r.io", want: Reference{Registry: "r.io", Repository: "app", Tag: "_Tag.1-x"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseReference(tt.in, tt.def)
			if err != nil {
				t.Fatalf("ParseReference(%q, %q): %v", tt.in, tt.def, err)
			}
			if got != tt.want {
				t.Errorf("ParseReference(%q, %q): got %+v, want %+v", tt.in, tt.def, got, tt.want)
			}
			if tt.str != "" && got.String() != tt.str {
				t.Errorf("String: got %q, want %q", got.String(), tt.str)
			}
			if tt.ident != "" && got.Identifier() != tt.ident {
				t.Errorf("Identifier: got %q, want %q", got.Identifier(), tt.ident)
			}
			// The full form parses back to the same reference.
			again, err := ParseReference(got.String(), "")
			if err != nil || again != got {
				t.Errorf("round trip of %q: got %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseReferenceErrors(t *testing.T) {
	tests := []struct {
		in, def string
		part    string // ReferenceError.Part
		value   string // ReferenceError.Value; "-" → not checked
	}{
		{"", "docker.io", "reference", "-"},
		{"https://r.io/app", "", "reference", "-"},
		{"app name", "r.io", "reference", "-"},
		{"app\ttab", "r.io", "reference", "-"},
		{"Busybox", "docker.io", "path component", "Busybox"},
		{"r.io/App/x", "", "path component", "App"},
		{"r.io/app/X", "", "path component", "X"},
		{"app:", "r.io", "tag", ""},
		{"app:-bad", "r.io", "tag", "-bad"},
		{"app:.bad", "r.io", "tag", ".bad"},
		{"app:" + strings.Repeat("t", 129), "r.io", "tag", "-"},
		{"app:t!", "r.io", "tag", "t!"},
		{"app@", "r.io", "digest", ""},
		{"app@sha256:abc", "r.io", "digest", "sha256:abc"},
		{"app@sha256:" + strings.Repeat("g", 64), "r.io", "digest", "-"},
		{"app@sha256:" + strings.ToUpper(hexA), "r.io", "digest", "-"},
		{"app@sha256:" + hexA[:63], "r.io", "digest", "-"},
		{"app@md5:" + hexA, "r.io", "digest", "-"},
		{"app@sha256:" + hexA + "@sha256:" + hexA, "r.io", "digest", "-"},
		{"app", "", "registry", ""},
		{"r.io:/app", "", "registry", "r.io:"},
		{"r.io:99999/app", "", "registry", "r.io:99999"},
		{"r.io:0/app", "", "registry", "r.io:0"},
		{"r.io:abc/app", "", "registry", "-"},
		{"-r.io/app", "", "registry", "-r.io"},
		{"r_io.com/app", "", "registry", "r_io.com"},
		{"[::1/app", "", "registry", "-"},
		{"[zz::1]:5000/app", "", "registry", "-"},
		{"app", "bad host!", "registry", "bad host!"},
		{"r.io/", "", "repository", ""},
		{"r.io", "", "registry", ""}, // one component is a repository name, never a host
		{"r.io//app", "", "repository", "-"},
		{"r.io/app/", "", "repository", "-"},
		{"/app", "r.io", "repository", "-"},
		{"r.io/a--", "", "path component", "a--"},
		{"r.io/-a", "", "path component", "-a"},
		{"r.io/a..b", "", "path component", "a..b"},
		{"r.io/a___b", "", "path component", "a___b"},
		{"r.io/a_.b", "", "path component", "a_.b"},
		{"@sha256:" + hexA, "r.io", "repository", ""},
		{":tag", "r.io", "repository", "-"},
		{"r.io/" + strings.Repeat("a", 252), "", "repository", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseReference(tt.in, tt.def)
			if err == nil {
				t.Fatalf("ParseReference(%q, %q): got %+v, want an error about the %s", tt.in, tt.def, got, tt.part)
			}
			var re *ReferenceError
			if !errors.As(err, &re) {
				t.Fatalf("ParseReference(%q): got error %T %v, want *ReferenceError", tt.in, err, err)
			}
			if re.Part != tt.part {
				t.Errorf("ParseReference(%q): got part %q (%v), want %q", tt.in, re.Part, err, tt.part)
			}
			if tt.value != "-" && re.Value != tt.value {
				t.Errorf("ParseReference(%q): got value %q, want %q", tt.in, re.Value, tt.value)
			}
			if !strings.Contains(err.Error(), tt.part) {
				t.Errorf("message %q does not name the %s", err, tt.part)
			}
		})
	}
}

func TestParseRegistryOrReference(t *testing.T) {
	dgst := "sha256:" + hexA
	for _, tc := range []struct {
		in   string
		want Reference // the zero Reference: an error
	}{
		// A registry alone, as regfs mount always took it.
		{"127.0.0.1:5000", Reference{Registry: "127.0.0.1:5000"}},
		{"ghcr.io", Reference{Registry: "ghcr.io"}},
		{"ghcr.io/", Reference{Registry: "ghcr.io"}},
		{"docker.io", Reference{Registry: "docker.io"}},
		{"localhost", Reference{Registry: "localhost"}},
		{"[::1]:5000", Reference{Registry: "[::1]:5000"}},
		// No '/': a registry whenever it can be one.
		{"alpine", Reference{Registry: "alpine"}},
		{"node:20", Reference{Registry: "node:20"}},
		{"registry:5000", Reference{Registry: "registry:5000"}},
		// ... and Docker Hub's otherwise.
		{"alpine:3.19", Reference{Registry: "docker.io", Repository: "library/alpine", Tag: "3.19"}},
		{"alpine:latest", Reference{Registry: "docker.io", Repository: "library/alpine", Tag: "latest"}},
		{"host:99999", Reference{Registry: "docker.io", Repository: "library/host", Tag: "99999"}}, // no such port
		{"alpine@" + dgst, Reference{Registry: "docker.io", Repository: "library/alpine", Digest: digest.Digest(dgst)}},
		// A first component without '.' or ':' that is not localhost is a
		// Docker Hub path.
		{"library/node:20", Reference{Registry: "docker.io", Repository: "library/node", Tag: "20"}},
		{"user/app", Reference{Registry: "docker.io", Repository: "user/app"}},
		{"docker.io/alpine", Reference{Registry: "docker.io", Repository: "library/alpine"}},
		{"docker.io/alpine:3.19", Reference{Registry: "docker.io", Repository: "library/alpine", Tag: "3.19"}},
		{"index.docker.io/alpine", Reference{Registry: "docker.io", Repository: "library/alpine"}},
		// Anything with a host is that host's.
		{"127.0.0.1:5000/test/small", Reference{Registry: "127.0.0.1:5000", Repository: "test/small"}},
		{"127.0.0.1:5000/test/small:latest", Reference{Registry: "127.0.0.1:5000", Repository: "test/small", Tag: "latest"}},
		{"127.0.0.1:5000/test/small@" + dgst, Reference{Registry: "127.0.0.1:5000", Repository: "test/small", Digest: digest.Digest(dgst)}},
		{"localhost/app:v1", Reference{Registry: "localhost", Repository: "app", Tag: "v1"}},
		{"registry:5000/app", Reference{Registry: "registry:5000", Repository: "app"}},
		// Malformed.
		{"", Reference{}},
		{"/", Reference{}},
		{"http://ghcr.io", Reference{}},
		{"ghcr.io//x", Reference{}},
		{"127.0.0.1:5000/Test", Reference{}},
		{"127.0.0.1:5000/test/small:", Reference{}},
		{"127.0.0.1:5000/test/small/", Reference{}},
		{"alpine:3.19@sha256:12", Reference{}},
	} {
		got, err := ParseRegistryOrReference(tc.in)
		switch {
		case tc.want == Reference{} && err == nil:
			t.Errorf("ParseRegistryOrReference(%q): got %+v, want an error", tc.in, got)
		case tc.want != Reference{} && (err != nil || got != tc.want):
			t.Errorf("ParseRegistryOrReference(%q): got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
