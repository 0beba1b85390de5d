package fs

import (
	"hash/fnv"
	"regexp"
	"strings"
	"testing"
)

// The grammars the hand-written checks implement.
var (
	componentGrammar = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagGrammar       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

func TestNameChecksMatchGrammar(t *testing.T) {
	for _, tc := range []struct {
		name           string
		component, tag bool
	}{
		{"", false, false},
		{"a", true, true},
		{"r00042", true, true},
		{"a.b", true, true},
		{"a_b", true, true},
		{"a__b", true, true},
		{"a___b", false, true},
		{"a--b", true, true},
		{"a---b", true, true},
		{"a..b", false, true},
		{"a._b", false, true},
		{"a-_b", false, true},
		{"_a", false, true},
		{"-a", false, false},
		{".a", false, false},
		{"a.", false, true},
		{"a-", false, true},
		{"A", false, true},
		{"v1.2.3-rc_1", true, true},
		{"V1", false, true},
		{"a:b", false, false},
		{"a/b", false, false},
		{"é", false, false},
		{strings.Repeat("a", 128), true, true},
		{strings.Repeat("a", 129), true, false},
	} {
		if got := isComponent(tc.name); got != tc.component {
			t.Errorf("isComponent(%q) = %v, want %v", tc.name, got, tc.component)
		}
		if got := isTag(tc.name); got != tc.tag {
			t.Errorf("isTag(%q) = %v, want %v", tc.name, got, tc.tag)
		}
		checkNameGrammar(t, tc.name)
	}
}

func checkNameGrammar(t *testing.T, s string) {
	t.Helper()
	if got, want := isComponent(s), componentGrammar.MatchString(s); got != want {
		t.Errorf("isComponent(%q) = %v, the grammar says %v", s, got, want)
	}
	if got, want := isTag(s), tagGrammar.MatchString(s); got != want {
		t.Errorf("isTag(%q) = %v, the grammar says %v", s, got, want)
	}
}

// FuzzNameChecks: registry listings are untrusted input; the checks that
// filter them agree with the grammar on any string.
func FuzzNameChecks(f *testing.F) {
	for _, s := range []string{"", "a", "a__b", "a___b", "a-._b", "v1.0", "_x", strings.Repeat("z", 130)} {
		f.Add(s)
	}
	f.Fuzz(checkNameGrammar)
}

// TestInoOfIsFNV: inode numbers stay what hash/fnv made them.
func TestInoOfIsFNV(t *testing.T) {
	for _, parts := range [][]string{{}, {""}, {"host", "dir", "a/b"}, {"127.0.0.1:5000", "tagimage", "r/_tags/v1"}} {
		h := fnv.New64a()
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		want := h.Sum64() &^ (1 << 63)
		if want < 2 {
			want += 2
		}
		if got := inoOf(parts...); got != want {
			t.Errorf("inoOf(%q) = %d, want %d", parts, got, want)
		}
	}
}
