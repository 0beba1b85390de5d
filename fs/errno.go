package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"net"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry"
)

// toErrno is the one place an error becomes an errno. It unwraps (errors.Is
// and errors.As); go-fuse's fs.ToErrno does not, and answers ENOSYS for a
// wrapped error, which the kernel remembers for the whole mount.
//
//	not found (registry or file)   → ENOENT
//	unauthorized/forbidden         → EACCES, one log line
//	caller interrupted (ctx)       → EINTR
//	a network failure              → EIO, one log line with the cause
//	an errno already               → itself
//	anything else, timeouts too    → EIO, one log line with the cause
//
// A network failure is checked before the errno case: it wraps the
// socket's errno (ECONNREFUSED, ECONNRESET), which means nothing to a
// reader of a file and must not reach one.
func toErrno(log logrus.FieldLogger, op, path string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, iofs.ErrNotExist):
		log.WithFields(logrus.Fields{"op": op, "path": path}).Debugf("not found: %v", err)
		return syscall.ENOENT
	case errors.Is(err, registry.ErrUnauthorized):
		log.WithFields(logrus.Fields{"op": op, "path": path}).Warnf("access denied: %v", err)
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		log.WithFields(logrus.Fields{"op": op, "path": path}).Errorf("timed out: %v", err)
		return syscall.EIO
	case errors.As(err, new(*net.OpError)):
		// The default below: EIO, and the line names the failed dial or read.
	case errors.As(err, &errno) && errno != 0:
		return errno
	}
	log.WithFields(logrus.Fields{"op": op, "path": path}).Errorf("%v", err)
	return syscall.EIO
}
