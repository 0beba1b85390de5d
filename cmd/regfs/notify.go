package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// notifySocketEnv names the service manager's notification socket
// (sd_notify(3)); set by systemd for Type=notify services.
const notifySocketEnv = "NOTIFY_SOCKET"

// notifyServiceManager sends state ("READY=1", "STOPPING=1", newline
// separated assignments) as one datagram to $NOTIFY_SOCKET, a socket path
// or an abstract name written with a leading '@'. Without the variable it
// does nothing.
func notifyServiceManager(state string) error {
	addr := os.Getenv(notifySocketEnv)
	if addr == "" {
		return nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return fmt.Errorf("%s=%q: want a socket path or an @abstract name", notifySocketEnv, addr)
	}
	// Go's net package maps a leading '@' to Linux's abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify service manager at %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify service manager at %s: %w", addr, err)
	}
	return nil
}
