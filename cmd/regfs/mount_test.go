package main

import (
	"strings"
	"testing"
)

func TestCheckRegistryArg(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want string // in the error; "" for none
	}{
		{"127.0.0.1:5000", ""},
		{"ghcr.io", ""},
		{"[::1]:5000", ""},
		{"http://host:5000", `want host[:port] without a scheme: regfs mount host:5000 MOUNTPOINT (add --plain-http`},
		{"https://ghcr.io/", `without a scheme: regfs mount ghcr.io MOUNTPOINT`},
		{"127.0.0.1:5000/test/small:latest", `not an image: mount the registry (regfs mount 127.0.0.1:5000 MOUNTPOINT) and open MOUNTPOINT/test/small:latest/`},
	} {
		err := checkRegistryArg(tc.arg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: got %v, want no error", tc.arg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want an error with %q", tc.arg, err, tc.want)
		}
	}
}
