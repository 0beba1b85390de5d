package main

import (
	"runtime"
	"strings"
	"testing"
)

// regfs version and regfs --version print the same line: the module
// version, the Go version and os/arch.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := runCLI(t, args...)
		want := "regfs " + versionString() + " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
		if err != nil || out != want {
			t.Errorf("regfs %s: got %q, %v; want %q", strings.Join(args, " "), out, err, want)
		}
	}
}
