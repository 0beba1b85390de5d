package mounttest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// nsRun is one run of a shell script in a mount namespace of its own.
type nsRun struct {
	out    string // the script's stdout and stderr
	status int    // its exit status
}

// inMountNamespace runs script with sh in a private mount namespace where
// /usr/local/sbin holds the regfs under test and nothing else. mount(8)
// runs mount.fuse3 without the caller's PATH, and mount.fuse3 runs
// "regfs SOURCE MOUNTPOINT -o OPTS" with sh's default PATH: this is how it
// finds this build, and the machine's directories stay untouched. Mounts
// made there are seen only there; env holds the script's variables
// (NAME=value). A regfs left serving one of mountpoints is killed in
// Cleanup, which takes its namespace and mounts with it.
func inMountNamespace(t *testing.T, mountpoints []string, script string, env ...string) nsRun {
	t.Helper()
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("mount(8) of a fuse.regfs line needs root")
	}
	for _, tool := range []string{"unshare", "mount", "umount", "mount.fuse3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	bin := t.TempDir()
	if err := os.Symlink(regfsBin, filepath.Join(bin, "regfs")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, mnt := range mountpoints {
			killServing(mnt)
		}
	})
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		"set -u; mount --bind \"$REGFS_BIN\" /usr/local/sbin || exit 99\n"+script)
	cmd.Env = append(append(os.Environ(), "REGFS_BIN="+bin), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	run := nsRun{out: out.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		run.status = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("unshare: %v", err)
	}
	if run.status == 99 {
		t.Skipf("no private mount namespace here: %s", run.out)
	}
	return run
}

// killServing kills the regfs processes serving mountpoint, by pid.
func killServing(mountpoint string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if filepath.Base(argv[0]) != "regfs" || !containsString(argv, mountpoint) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// regfsServing reports whether a regfs process serves mountpoint.
func regfsServing(mountpoint string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil {
			argv := strings.Split(string(b), "\x00")
			if filepath.Base(argv[0]) == "regfs" && containsString(argv, mountpoint) {
				return true
			}
		}
	}
	return false
}

// mountLine is mountpoint's line in a copy of /proc/self/mounts: source,
// type and options; "" when not mounted.
func mountLine(t *testing.T, mounts, mountpoint string) string {
	t.Helper()
	b, err := os.ReadFile(mounts)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == mountpoint {
			return f[0] + " " + f[2] + " " + f[3]
		}
	}
	return ""
}

// `mount -t fuse.regfs` mounts through mount.fuse3 with every -o option
// applied, returns once the mount answers, and umount(8) stops regfs.
func TestMountTypeFuseRegfs(t *testing.T) {
	mnt, out, cache := t.TempDir(), t.TempDir(), t.TempDir()
	run := inMountNamespace(t, []string{mnt}, `
mount -t fuse.regfs "$REG" "$MNT" -o ro,nofail,_netdev,allow_other,noexec,cache_dir="$CACHE",tag_ttl=7s || exit 10
cp /proc/self/mounts "$OUT/mounts"
cp "$MNT/test/small:latest/manifest.json" "$OUT/manifest.json" || exit 11
cp "$MNT/.regfs/config" "$OUT/config" || exit 12
umount "$MNT" || exit 13
cp /proc/self/mounts "$OUT/mounts-after"
`, "REG="+reg.Host, "MNT="+mnt, "OUT="+out, "CACHE="+cache)
	if run.status != 0 {
		t.Fatalf("script: exit status %d: %s", run.status, run.out)
	}
	line := mountLine(t, filepath.Join(out, "mounts"), mnt)
	if !strings.HasPrefix(line, reg.Host+" fuse.regfs ro,nosuid,nodev,noexec,") || !strings.Contains(line, "allow_other") {
		t.Errorf("mount line: got %q, want %s fuse.regfs ro,nosuid,nodev,noexec,...allow_other", line, reg.Host)
	}
	if got := sha256File(t, filepath.Join(out, "manifest.json")); got != fixtures.Small.Digest {
		t.Errorf("manifest.json read through mount -t: got %s, want %s", got, fixtures.Small.Digest)
	}
	var config map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(out, "config")), &config); err != nil {
		t.Fatalf(".regfs/config: %v", err)
	}
	for key, want := range map[string]any{"tag_ttl": "7s", "cache_dir": cache, "allow_other": true, "noexec": true} {
		if config[key] != want {
			t.Errorf(".regfs/config %s: got %v, want %v", key, config[key], want)
		}
	}
	if line := mountLine(t, filepath.Join(out, "mounts-after"), mnt); line != "" {
		t.Errorf("after umount: got mount %q, want none", line)
	}
	waitFor(t, "regfs to exit after umount", func() bool { return !regfsServing(mnt) })
}

// `mount -a` against an fstab mounts its fuse.regfs lines, except noauto.
func TestMountFstab(t *testing.T) {
	mnt, skipped, out, cache := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	fstab := filepath.Join(t.TempDir(), "fstab")
	lines := reg.Host + " " + mnt + " fuse.regfs ro,nofail,_netdev,allow_other,cache_dir=" + cache + ",x-systemd.automount 0 0\n" +
		reg.Host + " " + skipped + " fuse.regfs ro,noauto 0 0\n"
	if err := os.WriteFile(fstab, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	run := inMountNamespace(t, []string{mnt, skipped}, `
mount -T "$FSTAB" -a || exit 10
cp /proc/self/mounts "$OUT/mounts"
cp "$MNT/test/small:latest/manifest.json" "$OUT/manifest.json" || exit 11
umount "$MNT" || exit 12
`, "FSTAB="+fstab, "MNT="+mnt, "OUT="+out)
	if run.status != 0 {
		t.Fatalf("script: exit status %d: %s", run.status, run.out)
	}
	if line := mountLine(t, filepath.Join(out, "mounts"), mnt); !strings.HasPrefix(line, reg.Host+" fuse.regfs ro,") {
		t.Errorf("fstab line: got mount %q, want %s fuse.regfs ro,...", line, reg.Host)
	}
	if line := mountLine(t, filepath.Join(out, "mounts"), skipped); line != "" {
		t.Errorf("noauto line: got mount %q, want none", line)
	}
	if got := sha256File(t, filepath.Join(out, "manifest.json")); got != fixtures.Small.Digest {
		t.Errorf("manifest.json through the fstab mount: got %s, want %s", got, fixtures.Small.Digest)
	}
	waitFor(t, "regfs to exit after umount", func() bool { return !regfsServing(mnt) })
}

// A bad option, on the command line or in fstab, fails with one line that
// names it and regfs's usage status, and leaves no mount and no process.
func TestMountBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fstab  string // the line's options; "" for mount -t with opts
		opts   string
		want   string
		status int // mount(8)'s exit status: regfs's own, or 32 for mount -a
	}{
		{"unknown option", "", "ro,cache_sise=1G", "regfs: -o cache_sise=1G: unknown option", 2},
		{"bad value", "", "ro,cache_size=lots", `regfs: -o cache_size=lots: invalid argument "lots"`, 2},
		{"rw", "", "rw", "regfs: -o rw: regfs mounts read-only", 2},
		{"no options (rw implied)", "", "", "regfs: -o rw: regfs mounts read-only", 2},
		{"fstab unknown option", "ro,nofail,allow_others", "", "regfs: -o allow_others: unknown option", 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, out := t.TempDir(), t.TempDir()
			fstab := filepath.Join(t.TempDir(), "fstab")
			script := `mount -t fuse.regfs "$REG" "$MNT" ${OPTS:+-o "$OPTS"} 2>"$OUT/stderr"; status=$?`
			if tc.fstab != "" {
				if err := os.WriteFile(fstab, []byte(reg.Host+" "+mnt+" fuse.regfs "+tc.fstab+" 0 0\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				script = `mount -T "$FSTAB" -a 2>"$OUT/stderr"; status=$?`
			}
			run := inMountNamespace(t, []string{mnt}, script+`
cp /proc/self/mounts "$OUT/mounts"
exit $status`, "REG="+reg.Host, "MNT="+mnt, "OUT="+out, "OPTS="+tc.opts, "FSTAB="+fstab)
			stderr := strings.TrimSpace(string(readFile(t, filepath.Join(out, "stderr"))))
			if run.status != tc.status || !strings.Contains(stderr, tc.want) {
				t.Errorf("got exit status %d and %q, want %d and %q", run.status, stderr, tc.status, tc.want)
			}
			if n := strings.Count(stderr, "\n") + 1; n != 1 {
				t.Errorf("got %d lines on stderr, want one: %q", n, stderr)
			}
			if line := mountLine(t, filepath.Join(out, "mounts"), mnt); line != "" {
				t.Errorf("got mount %q, want none", line)
			}
			if regfsServing(mnt) {
				t.Errorf("a regfs process serves %s after the failure", mnt)
			}
		})
	}
}
