package mounttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// regfsProc is the regfs binary serving a mount.
type regfsProc struct {
	cmd    *exec.Cmd
	mnt    string
	stderr *bytes.Buffer
	exited chan error
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forceUnmount removes a mount a failed test left behind.
func forceUnmount(dir string) {
	if isFUSEMount(dir) {
		if exec.Command("fusermount3", "-u", "-z", dir).Run() != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	}
}

// startRegfs runs `regfs mount` in the foreground as a subprocess and waits
// until the mount answers. Cleanup unmounts and kills whatever is left.
func startRegfs(t *testing.T, extra ...string) *regfsProc {
	t.Helper()
	needFUSE(t)
	p := &regfsProc{mnt: t.TempDir(), stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	args := append([]string{"mount", "--log-level", "warn", "--cache-dir", t.TempDir()}, extra...)
	p.cmd = exec.Command(regfsBin, append(args, reg.Host, p.mnt)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		forceUnmount(p.mnt)
		p.cmd.Process.Kill()
	})
	waitFor(t, "the regfs mount", func() bool { return isFUSEMount(p.mnt) })
	return p
}

func (p *regfsProc) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("regfs did not exit; stderr:\n%s", p.stderr)
		return nil
	}
}

func TestCLIExitsZero(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, p *regfsProc)
	}{
		{"fusermount3 -u", func(t *testing.T, p *regfsProc) {
			if out, err := exec.Command("fusermount3", "-u", p.mnt).CombinedOutput(); err != nil {
				t.Fatalf("fusermount3 -u: %v: %s", err, out)
			}
		}},
		{"SIGTERM", func(t *testing.T, p *regfsProc) { p.cmd.Process.Signal(syscall.SIGTERM) }},
		{"SIGINT", func(t *testing.T, p *regfsProc) { p.cmd.Process.Signal(syscall.SIGINT) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startRegfs(t)
			if got := sha256File(t, filepath.Join(p.mnt, "test/small:latest/manifest.json")); got != fixtures.Small.Digest {
				t.Errorf("manifest.json through the binary: got %s, want %s", got, fixtures.Small.Digest)
			}
			tc.stop(t, p)
			if err := p.waitExit(t); err != nil {
				t.Errorf("regfs exit: got %v, want status 0; stderr:\n%s", err, p.stderr)
			}
			if isFUSEMount(p.mnt) {
				t.Errorf("%s is still mounted after regfs exited", p.mnt)
			}
		})
	}
}

func TestCLIStatusDir(t *testing.T) {
	p := startRegfs(t, "--tag-ttl", "5s")
	if got := readdir(t, filepath.Join(p.mnt, ".regfs")); strings.Join(got, " ") != "config stats version" {
		t.Errorf("ls .regfs: got %v, want [config stats version]", got)
	}
	if got := string(readFile(t, filepath.Join(p.mnt, ".regfs/version"))); strings.TrimSpace(got) == "" || !strings.HasSuffix(got, "\n") {
		t.Errorf(".regfs/version: got %q, want one line", got)
	}
	var cfg map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(p.mnt, ".regfs/config")), &cfg); err != nil {
		t.Fatalf(".regfs/config: %v", err)
	}
	if cfg["registry"] != reg.Host || cfg["tag_ttl"] != "5s" {
		t.Errorf(".regfs/config: got registry %v tag_ttl %v, want %s and 5s", cfg["registry"], cfg["tag_ttl"], reg.Host)
	}
	readFile(t, filepath.Join(p.mnt, "test/small:latest/layers", chainIDs(fixtures.Small.DiffIDs)[0], "blob"))
	var st struct {
		Cache struct {
			BytesFetched int64 `json:"bytes_fetched"`
		} `json:"cache"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(p.mnt, ".regfs/stats")), &st); err != nil || st.Cache.BytesFetched == 0 {
		t.Errorf(".regfs/stats after reading a blob: got %+v (%v), want bytes fetched", st, err)
	}
}

func TestCLIDaemon(t *testing.T) {
	needFUSE(t)
	mnt := t.TempDir()
	t.Cleanup(func() { forceUnmount(mnt) })
	out, err := exec.Command(regfsBin, "mount", "--daemon", "--cache-dir", t.TempDir(), reg.Host, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("regfs mount --daemon: %v: %s", err, out)
	}
	// It returned: the mount must answer now, without waiting.
	if !isFUSEMount(mnt) {
		t.Fatalf("regfs mount --daemon returned, but %s is not mounted", mnt)
	}
	if got := sha256File(t, filepath.Join(mnt, "test/small:latest/manifest.json")); got != fixtures.Small.Digest {
		t.Errorf("manifest.json: got %s, want %s", got, fixtures.Small.Digest)
	}
	daemonAlive := func() bool {
		ms, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, m := range ms {
			if b, err := os.ReadFile(m); err == nil && bytes.Contains(b, []byte(mnt)) {
				return true
			}
		}
		return false
	}
	if !daemonAlive() {
		t.Errorf("no regfs daemon serving %s", mnt)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	waitFor(t, "the daemon to exit", func() bool { return !daemonAlive() })
}

func TestCLIUsage(t *testing.T) {
	needFUSE(t)
	for _, tc := range []struct {
		args     []string
		wantOK   bool
		contains string
	}{
		{[]string{"version"}, true, "regfs "},
		{[]string{"--help"}, true, "mount"},
		{[]string{"mount", "--help"}, true, "--plain-http"},
		{[]string{"mount", "only-one-arg"}, false, "accepts 2 arg"},
		{[]string{"mount", "--platform", "linux", reg.Host, t.TempDir()}, false, "--platform"},
		{[]string{"mount", "--log-format", "xml", reg.Host, t.TempDir()}, false, "--log-format"},
		{[]string{"mount", "--cache-size", "lots", reg.Host, t.TempDir()}, false, "cache-size"},
		{[]string{"mount", "--api", "v3", reg.Host, t.TempDir()}, false, "v3"},
	} {
		out, err := exec.Command(regfsBin, tc.args...).CombinedOutput()
		if (err == nil) != tc.wantOK || !strings.Contains(string(out), tc.contains) {
			t.Errorf("regfs %v: got %v and %q, want success=%v and output with %q", tc.args, err, out, tc.wantOK, tc.contains)
		}
	}
}

// mountsAt counts the mounts on path (its mountinfo lines).
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// A mountpoint regfs cannot use is refused before anything is mounted, in
// the foreground and with --daemon, with one line that names the fix; no
// dead or stacked mount is left.
func TestCLIRefusesBadMountpoints(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(full, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	busy := startRegfs(t).mnt
	for _, tc := range []struct {
		name       string
		registry   string
		mountpoint string
		want       string
	}{
		{"regular file", reg.Host, file, "is not a directory"},
		{"missing", reg.Host, filepath.Join(dir, "missing"), "does not exist: create it first"},
		{"not empty", reg.Host, full, "is not empty"},
		{"mounted already", reg.Host, busy, "is mounted already"},
		{"URL as registry", "http://" + reg.Host, t.TempDir(), "want host[:port] without a scheme"},
		{"unknown image", reg.Host + "/test/small:nope", t.TempDir(), "no image " + reg.Host + "/test/small:nope, nothing mounted"},
	} {
		for _, daemon := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s daemon=%v", tc.name, daemon), func(t *testing.T) {
				before := mountsAt(t, tc.mountpoint)
				args := []string{"mount", "--cache-dir", t.TempDir()}
				if daemon {
					args = append(args, "--daemon")
				}
				cmd := exec.Command(regfsBin, append(args, tc.registry, tc.mountpoint)...)
				out, err := cmd.CombinedOutput()
				t.Cleanup(func() {
					if mountsAt(t, tc.mountpoint) > before {
						forceUnmount(tc.mountpoint)
					}
				})
				if err == nil || !strings.Contains(string(out), tc.want) {
					t.Errorf("got %v and %q, want a failure saying %q", err, out, tc.want)
				}
				if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines != 1 {
					t.Errorf("got %d lines of output, want one: %q", lines, out)
				}
				if got := mountsAt(t, tc.mountpoint); got != before {
					t.Errorf("mounts on %s: got %d, want %d as before", tc.mountpoint, got, before)
				}
			})
		}
	}

	// --allow-non-empty mounts over the files.
	out, err := exec.Command(regfsBin, "mount", "--daemon", "--allow-non-empty", "--cache-dir", t.TempDir(), reg.Host, full).CombinedOutput()
	t.Cleanup(func() { forceUnmount(full) })
	if err != nil {
		t.Fatalf("regfs mount --allow-non-empty: %v: %s", err, out)
	}
	if !isFUSEMount(full) {
		t.Fatalf("regfs mount --allow-non-empty returned, but %s is not mounted", full)
	}
	if out, err := exec.Command("fusermount3", "-u", full).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
}
