package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/regfs/regfs/registry"
)

func TestParseMountSource(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want registry.Reference
		err  string // in the error, which is a usage error; "" for none
	}{
		{arg: "127.0.0.1:5000", want: registry.Reference{Registry: "127.0.0.1:5000"}},
		{arg: "ghcr.io", want: registry.Reference{Registry: "ghcr.io"}},
		{arg: "[::1]:5000", want: registry.Reference{Registry: "[::1]:5000"}},
		{arg: "127.0.0.1:5000/test/small:latest", want: registry.Reference{Registry: "127.0.0.1:5000", Repository: "test/small", Tag: "latest"}},
		{arg: "127.0.0.1:5000/test/small", want: registry.Reference{Registry: "127.0.0.1:5000", Repository: "test/small"}},
		{arg: "alpine:3.19", want: registry.Reference{Registry: "docker.io", Repository: "library/alpine", Tag: "3.19"}},
		{arg: "docker.io/alpine", want: registry.Reference{Registry: "docker.io", Repository: "library/alpine"}},
		{arg: "http://host:5000", err: `want host[:port] without a scheme: regfs mount host:5000 MOUNTPOINT (add --plain-http`},
		{arg: "https://ghcr.io/", err: `without a scheme: regfs mount ghcr.io MOUNTPOINT`},
		{arg: "https://ghcr.io/o/r:1", err: `without a scheme: regfs mount ghcr.io/o/r:1 MOUNTPOINT`},
		{arg: "127.0.0.1:5000/Test/small", err: `path component "Test": must be lower case`},
		{arg: "127.0.0.1:5000/test/small:", err: `tag "": empty after ':'`},
	} {
		got, err := parseMountSource(tc.arg)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %+v, %v; want %+v", tc.arg, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: got %v, want an error with %q", tc.arg, err, tc.err)
		case tc.err != "" && !errors.As(err, new(usageError)):
			t.Errorf("%q: got %T, want a usage error (exit 2)", tc.arg, err)
		}
	}
}
