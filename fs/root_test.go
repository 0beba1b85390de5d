package fs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/registry"
)

// scoped is a harness over h's registry whose root names repo[:ref], with
// .regfs/ shown.
func (h *harness) scoped(repo, ref string) *harness {
	h.t.Helper()
	s := *h
	s.root = h.newRoot(h.root.t.s, func(o *Options) {
		o.Status = &Status{Version: "v"}
		o.Repository, o.Reference = repo, ref
	})
	return &s
}

// A root that names one image shows that image's directory as the registry
// root shows it under <repo>:<tag>/ or <repo>@<digest>/, plus .regfs/; one
// that names a repository shows its tags and resolves digests.
func TestRootScopes(t *testing.T) {
	h := newHarness(t, nil)
	small := h.small.img.ManifestDigest.String()
	zero := "sha256:" + strings.Repeat("0", 64)
	withStatus := func(names []string) []string {
		names = append(slices.Clone(names), statusDirName)
		slices.Sort(names)
		return names
	}
	for _, tc := range []struct {
		repo, ref string
		want      []string // the root's listing
		found     []string // paths under the root that resolve
		missing   []string // and paths that are ENOENT
	}{
		{
			repo: "test/small", ref: "latest",
			want:    withStatus(h.readdir("test/small:latest")),
			found:   []string{"rootfs/etc/os-release", "config.json", ".regfs/version"},
			missing: []string{"latest", "_tags", "index.json"},
		},
		{
			repo: "test/small", ref: small,
			want:    withStatus(h.readdir("test/small@" + small)),
			found:   []string{"rootfs/bin/hello", "manifest.json"},
			missing: []string{"platforms"},
		},
		{
			repo: "test/multi", ref: "latest",
			want:  withStatus(h.readdir("test/multi:latest")),
			found: []string{"index.json", "platforms/linux-arm64-v8/rootfs/arch", "rootfs/arch"},
		},
		{
			repo:    "test/small",
			want:    []string{".regfs", "latest"},
			found:   []string{"latest/rootfs/etc/os-release", small + "/rootfs/bin/hello", ".regfs/config"},
			missing: []string{"nope", "_tags", "_digests", zero, "small:latest", "sha256-" + small[7:]},
		},
	} {
		name := tc.repo + ":" + tc.ref
		s := h.scoped(tc.repo, tc.ref)
		if err := s.root.Resolve(context.Background()); err != nil {
			t.Fatalf("%s: Resolve: got %v, want success", name, err)
		}
		if got := s.readdir(""); !slices.Equal(got, tc.want) {
			t.Errorf("%s: ls root: got %v, want %v", name, got, tc.want)
		}
		for _, p := range tc.found {
			if _, _, errno := s.walk(p); errno != 0 {
				t.Errorf("%s: lookup %s: got %v, want success", name, p, errno)
			}
		}
		for _, p := range tc.missing {
			if _, _, errno := s.walk(p); errno == 0 {
				t.Errorf("%s: lookup %s: got success, want ENOENT", name, p)
			}
		}
	}
	// The file bytes are the image's.
	if got := string(h.scoped("test/small", "latest").readFile("rootfs/etc/os-release")); got != "NAME=small\n" {
		t.Errorf("rootfs/etc/os-release: got %q, want %q", got, "NAME=small\n")
	}
}

// A digest root is pinned: its entries keep as long as any digest's.
func TestRootDigestIsPinned(t *testing.T) {
	h := newHarness(t, nil)
	s := h.scoped("test/small", h.small.img.ManifestDigest.String())
	if err := s.root.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, out := s.mustWalk("config.json"); out.EntryTimeout() != immutableTTL {
		t.Errorf("config.json entry timeout: got %v, want %v", out.EntryTimeout(), immutableTTL)
	}
	s = h.scoped("test/small", "latest")
	if _, out := s.mustWalk("config.json"); out.EntryTimeout() != DefaultTagTTL {
		t.Errorf("config.json under a tag root: entry timeout %v, want %v", out.EntryTimeout(), DefaultTagTTL)
	}
}

func TestRootResolveRefusesMissingNames(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		repo, ref string
		want      error
	}{
		{"", "", nil},
		{"test/small", "", nil},
		{"test/small", "latest", nil},
		{"test/small", "nope", registry.ErrNotFound},
		{"test/nope", "", registry.ErrNotFound},
		{"test/nope", "latest", registry.ErrNotFound},
		{"test/small", "sha256:" + strings.Repeat("0", 64), registry.ErrNotFound},
	} {
		err := h.scoped(tc.repo, tc.ref).root.Resolve(context.Background())
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Resolve %s:%s: got %v, want %v", tc.repo, tc.ref, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), tc.repo) {
			t.Errorf("Resolve %s:%s: got %q, want the repository named", tc.repo, tc.ref, err)
		}
	}
}

func TestOptionsRefuseBadScopes(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct{ repo, ref, want string }{
		{"", "latest", "needs Options.Repository"},
		{"Test/small", "", "bad path component"},
		{"test//small", "", "bad path component"},
		{"test/small", "bad:tag", "want a tag or"},
		{"test/small", "-x", "want a tag or"},
	} {
		_, err := NewRoot(Options{Session: h.root.t.s, Repository: tc.repo, Reference: tc.ref})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRoot %q %q: got %v, want an error with %q", tc.repo, tc.ref, err, tc.want)
		}
	}
}

// A tag root follows the tag once the tag TTL has passed; a digest root
// stays pinned.
func TestRootTagFollows(t *testing.T) {
	h := newHarness(t, nil)
	old := h.small.img.ManifestDigest.String()
	root := func(ref string) *harness {
		s := *h
		s.root = h.newRoot(h.root.t.s, func(o *Options) {
			o.TagTTL = time.Nanosecond // every answer about a tag is stale at once
			o.Repository, o.Reference = "test/small", ref
		})
		return &s
	}
	byTag, byDigest := root("latest"), root(old)
	if err := byDigest.root.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := string(byTag.readFile("rootfs/etc/os-release")); got != "NAME=small\n" {
		t.Fatalf("before the push: got %q, want NAME=small", got)
	}
	moved := h.c.addImage(t, "test/small", "latest", amd64, []testFile{{name: "etc/", typ: '5'}, {name: "etc/os-release", body: "NAME=moved\n"}})
	if got := string(byTag.readFile("rootfs/etc/os-release")); got != "NAME=moved\n" {
		t.Errorf("tag root after the tag moved: got %q, want NAME=moved", got)
	}
	if got := string(byTag.readFile("manifest.json")); got != string(moved.img.Manifest) {
		t.Errorf("tag root manifest.json after the tag moved: got the old one, want the new one")
	}
	if got := string(byDigest.readFile("rootfs/etc/os-release")); got != "NAME=small\n" {
		t.Errorf("digest root after the tag moved: got %q, want NAME=small", got)
	}
}
