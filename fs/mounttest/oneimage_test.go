package mounttest

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mountSource runs `regfs mount --daemon SOURCE` on a fresh directory; the
// mount is gone after the test, even when it fails.
func mountSource(t *testing.T, source string) string {
	t.Helper()
	needFUSE(t)
	mnt := t.TempDir()
	t.Cleanup(func() { forceUnmount(mnt) })
	out, err := exec.Command(regfsBin, "mount", "--daemon", "--cache-dir", t.TempDir(), source, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("regfs mount --daemon %s: %v: %s", source, err, out)
	}
	return mnt
}

// withoutStatus is tree without .regfs/ and what is under it.
func withoutStatus(tree map[string]*flatEntry) map[string]*flatEntry {
	for p := range tree {
		if p == ".regfs" || strings.HasPrefix(p, ".regfs/") {
			delete(tree, p)
		}
	}
	return tree
}

// An image mount's root is the image directory a registry mount shows
// under <repo>:<tag>/ or <repo>@<digest>/: the same names, modes, owners,
// sizes and bytes, rootfs/ and layers/ included.
func TestMountOneImage(t *testing.T) {
	whole := mount(t, reg.Host, mountOpts{})
	small := fixtures.Small.Digest.String()
	for _, tc := range []struct{ source, dir string }{
		{reg.Host + "/test/small:latest", "test/small:latest"},
		{reg.Host + "/test/small@" + small, "test/small@" + small},
		{reg.Host + "/test/small:docker", "test/small/_tags/docker"},
	} {
		t.Run(strings.NewReplacer("/", "_").Replace(tc.dir), func(t *testing.T) {
			mnt := mountSource(t, tc.source)
			compareTrees(t, "image root", withoutStatus(describe(t, mnt)), describe(t, filepath.Join(whole, tc.dir)))
			var cfg struct{ Registry, Mounted string }
			if err := json.Unmarshal(readFile(t, filepath.Join(mnt, ".regfs/config")), &cfg); err != nil || cfg.Registry != reg.Host || cfg.Mounted != tc.source {
				t.Errorf(".regfs/config: got %+v (%v), want registry %s, mounted %s", cfg, err, reg.Host, tc.source)
			}
			if got := sha256File(t, filepath.Join(mnt, "manifest.json")).String(); !strings.Contains(tc.source, "docker") && got != small {
				t.Errorf("manifest.json: got %s, want %s", got, small)
			}
		})
	}
}

// A repository mount lists the repository's tags, each the image
// directory of _tags/<tag>/, and resolves sha256:<hex>/ by digest.
func TestMountOneRepository(t *testing.T) {
	whole := mount(t, reg.Host, mountOpts{})
	mnt := mountSource(t, reg.Host+"/test/small")
	if got, want := readdir(t, mnt), []string{".regfs", "docker", "latest"}; !slices.Equal(got, want) {
		t.Errorf("ls: got %v, want %v", got, want)
	}
	for _, tag := range []string{"latest", "docker"} {
		if got, want := readdir(t, filepath.Join(mnt, tag)), readdir(t, filepath.Join(whole, "test/small/_tags", tag)); !slices.Equal(got, want) {
			t.Errorf("ls %s: got %v, want %v", tag, got, want)
		}
	}
	small := fixtures.Small.Digest.String()
	if got := sha256File(t, filepath.Join(mnt, small, "manifest.json")).String(); got != small {
		t.Errorf("%s/manifest.json: got %s, want %s", small, got, small)
	}
	if got, want := readFile(t, filepath.Join(mnt, "latest/rootfs/etc/hostname")), readFile(t, filepath.Join(whole, "test/small:latest/rootfs/etc/hostname")); string(got) != string(want) {
		t.Errorf("latest/rootfs/etc/hostname: got %q, want %q", got, want)
	}
}

// A reference that does not resolve exits 1 and one that does not parse
// exits 2, each with one line naming the cause, in the foreground and with
// --daemon, and no mount is left.
func TestMountRefusesBadReferences(t *testing.T) {
	needFUSE(t)
	zero := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, source string
		status       int
		want         string
	}{
		{"unknown tag", reg.Host + "/test/small:nope", 1, "no image " + reg.Host + "/test/small:nope, nothing mounted"},
		{"unknown digest", reg.Host + "/test/small@" + zero, 1, "no image " + reg.Host + "/test/small@" + zero},
		{"unknown repository", reg.Host + "/test/nope", 1, "no repository " + reg.Host + "/test/nope, nothing mounted"},
		{"upper case", reg.Host + "/Test/small", 2, `path component "Test": must be lower case`},
		{"empty tag", reg.Host + "/test/small:", 2, `tag "": empty after ':'`},
		{"bad digest", reg.Host + "/test/small@sha256:12", 2, "want algorithm:hex"},
	} {
		for _, daemon := range []bool{false, true} {
			name := tc.name
			if daemon {
				name += " daemon"
			}
			t.Run(name, func(t *testing.T) {
				mnt := t.TempDir()
				args := []string{"mount", "--cache-dir", t.TempDir()}
				if daemon {
					args = append(args, "--daemon")
				}
				out, err := exec.Command(regfsBin, append(args, tc.source, mnt)...).CombinedOutput()
				t.Cleanup(func() { forceUnmount(mnt) })
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != tc.status || !strings.Contains(string(out), tc.want) {
					t.Errorf("got %v and %q, want exit status %d saying %q", err, out, tc.status, tc.want)
				}
				if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines != 1 {
					t.Errorf("got %d lines of output, want one: %q", lines, out)
				}
				if n := mountsAt(t, mnt); n != 0 {
					t.Errorf("mounts on %s: got %d, want none", mnt, n)
				}
			})
		}
	}
}
