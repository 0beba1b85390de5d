package mounttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// notifyListener is a service manager's notification socket, as systemd
// gives a Type=notify service in $NOTIFY_SOCKET.
type notifyListener struct {
	addr string
	conn *net.UnixConn
}

// listenNotify listens on an abstract socket ('@' name), the form systemd
// uses, closed in Cleanup.
func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	addr := fmt.Sprintf("@regfs-mounttest-%s-%d", t.Name(), os.Getpid())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifyListener{addr: addr, conn: conn}
}

// next is the next notification.
func (l *notifyListener) next(t *testing.T) string {
	t.Helper()
	l.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, err := l.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

// runNotifyService runs start as a Type=notify service would run, with
// $NOTIFY_SOCKET set; checks that READY=1 arrives once mnt answers, that
// stop unmounts it with STOPPING=1 sent, and that regfs then exits 0. It
// returns what .regfs/config said while mounted.
func runNotifyService(t *testing.T, mnt string, start, stop []string) map[string]any {
	t.Helper()
	needFUSE(t)
	l := listenNotify(t)
	var stderr bytes.Buffer
	cmd := exec.Command(start[0], start[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+l.addr)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		forceUnmount(mnt)
		cmd.Process.Kill()
	})

	want := "READY=1\nSTATUS=serving " + reg.Host + " on " + mnt
	if got := l.next(t); got != want {
		t.Fatalf("first notification: got %q, want %q; stderr:\n%s", got, want, &stderr)
	}
	// READY=1 came after the mount answered: no waiting here.
	if !isFUSEMount(mnt) {
		t.Fatalf("READY=1 arrived, but %s is not mounted", mnt)
	}
	if got := sha256File(t, filepath.Join(mnt, "test/small:latest/manifest.json")); got != fixtures.Small.Digest {
		t.Errorf("manifest.json after READY=1: got %s, want %s", got, fixtures.Small.Digest)
	}
	var config map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(mnt, ".regfs/config")), &config); err != nil {
		t.Errorf(".regfs/config: %v", err)
	}
	if out, err := exec.Command(stop[0], stop[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(stop, " "), err, out)
	}
	if got := l.next(t); got != "STOPPING=1" {
		t.Errorf("notification on unmount: got %q, want STOPPING=1", got)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("regfs exit: got %v, want status 0; stderr:\n%s", err, &stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("regfs did not exit after %s; stderr:\n%s", strings.Join(stop, " "), &stderr)
	}
	return config
}

func TestMountNotifiesServiceManager(t *testing.T) {
	mnt := t.TempDir()
	runNotifyService(t, mnt,
		[]string{regfsBin, "mount", "--log-level", "warn", "--cache-dir", t.TempDir(), reg.Host, mnt},
		[]string{"fusermount3", "-u", mnt})
}

// contribUnit is contrib/regfs@.service.
const contribUnit = "../../contrib/regfs@.service"

// The commands of contrib/regfs@.service, run as systemd would run them
// (its variables filled in, the regfs under test in place of the installed
// one), mount and unmount with the notifications Type=notify needs; and
// systemd-analyze, where installed, finds nothing wrong with the unit.
func TestContribServiceUnit(t *testing.T) {
	needFUSE(t)
	b, err := os.ReadFile(contribUnit)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/regfs", regfsBin)
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "regfs@.service"), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "regfs@mnt-reg.service")).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v: %s", err, out)
		}
	}
	mnt, cache := t.TempDir(), t.TempDir()
	fill := strings.NewReplacer("${CACHE_DIRECTORY}", cache, "${OPTIONS}", "tag_ttl=9s", "${REGISTRY}", reg.Host, "%f", mnt)
	var start, stop []string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			start = strings.Fields(fill.Replace(v))
		}
		if v, ok := strings.CutPrefix(line, "ExecStop="); ok {
			stop = strings.Fields(fill.Replace(v))
		}
	}
	if !strings.Contains(unit, "\nType=notify\n") || start == nil || stop == nil {
		t.Fatalf("%s: want Type=notify, ExecStart= and ExecStop=", contribUnit)
	}
	config := runNotifyService(t, mnt, start, stop)
	if config["tag_ttl"] != "9s" || config["cache_dir"] != cache {
		t.Errorf(".regfs/config: got tag_ttl %v cache_dir %v, want 9s and %s", config["tag_ttl"], config["cache_dir"], cache)
	}
}
