package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenNotify listens on a unixgram socket at addr (a path, or @name in
// the abstract namespace) and returns a function reading one datagram.
func listenNotify(t *testing.T, addr string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyServiceManager(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@regfs-test-notify-%d", os.Getpid()),
	} {
		read := listenNotify(t, addr)
		t.Setenv(notifySocketEnv, addr)
		if err := notifyServiceManager("READY=1\nSTATUS=up"); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if got := read(); got != "READY=1\nSTATUS=up" {
			t.Errorf("%s: got %q, want READY=1 and STATUS", addr, got)
		}
	}
}

func TestNotifyServiceManagerErrors(t *testing.T) {
	t.Setenv(notifySocketEnv, "")
	if err := notifyServiceManager("READY=1"); err != nil {
		t.Errorf("without %s: got %v, want nothing done", notifySocketEnv, err)
	}
	for addr, want := range map[string]string{
		"vsock:2:1234":                        "want a socket path or an @abstract name",
		filepath.Join(t.TempDir(), "missing"): "no such file",
	} {
		t.Setenv(notifySocketEnv, addr)
		if err := notifyServiceManager("READY=1"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%s: got %v, want an error with %q", notifySocketEnv, addr, err, want)
		}
	}
}
