package mounttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// With $NOTIFY_SOCKET set, as systemd runs a Type=notify service, regfs
// sends READY=1 once the mount answers and STOPPING=1 when it is
// unmounted, then exits 0. The socket is an abstract one ('@' name), the
// form systemd uses.
func TestMountNotifiesServiceManager(t *testing.T) {
	needFUSE(t)
	addr := fmt.Sprintf("@regfs-mounttest-notify-%d", os.Getpid())
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	next := func() string {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}

	mnt := t.TempDir()
	var stderr bytes.Buffer
	cmd := exec.Command(regfsBin, "mount", "--log-level", "warn", "--cache-dir", t.TempDir(), reg.Host, mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr)
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
	if got := next(); got != want {
		t.Fatalf("first notification: got %q, want %q", got, want)
	}
	// READY=1 came after the mount answered: no waiting here.
	if !isFUSEMount(mnt) {
		t.Fatalf("READY=1 arrived, but %s is not mounted", mnt)
	}
	if got := sha256File(t, filepath.Join(mnt, "test/small:latest/manifest.json")); got != fixtures.Small.Digest {
		t.Errorf("manifest.json after READY=1: got %s, want %s", got, fixtures.Small.Digest)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	if got := next(); got != "STOPPING=1" {
		t.Errorf("notification on unmount: got %q, want STOPPING=1", got)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("regfs exit: got %v, want status 0; stderr:\n%s", err, &stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("regfs did not exit after fusermount3 -u; stderr:\n%s", &stderr)
	}
}
