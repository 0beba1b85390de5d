package main

import (
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_regfs", "zsh": "#compdef regfs", "fish": "complete -c regfs"} {
		out, _, err := runCLI(t, "completion", shell)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("regfs completion %s: got %v and %d bytes, want a script with %q", shell, err, len(out), want)
		}
	}
	// MOUNTPOINT completes to directories.
	out, _, err := runCLI(t, "__complete", "mount", "ghcr.io", "")
	if err != nil || !strings.Contains(out, ":16") {
		t.Errorf("completion of MOUNTPOINT: got %q, %v; want directive 16 (directories)", out, err)
	}
}

func TestFlagCompletions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // completions before the directive line
	}{
		{[]string{"mount", "--verify", ""}, []string{"lazy", "strict"}},
		{[]string{"prefetch", "--log-format", ""}, []string{"text", "json"}},
		{[]string{"mount", "-o", "ro,allow_"}, []string{"ro,allow_non_empty", "ro,allow_other"}},
		{[]string{"mount", "-o", "cache_s"}, []string{"cache_size="}},
	} {
		out, _, err := runCLI(t, append([]string{"__complete"}, tc.args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) == 0 || strings.Join(lines[:len(lines)-1], " ") != strings.Join(tc.want, " ") {
			t.Errorf("complete %q: got %q, %v; want %q", tc.args, out, err, tc.want)
		}
	}
}
