package main

import (
	"errors"
	"fmt"
)

// Exit statuses, as mount(8) helpers and most commands use them.
const (
	exitRuntime = 1 // the registry, the mount or the cache failed
	exitUsage   = 2 // the command line is wrong: nothing was started
)

// usageError is a command line that cannot work as written: an unknown
// option or flag, a value out of range. regfs exits 2 for it.
type usageError struct{ err error }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitStatus is the process status for err, returned by a command.
func exitStatus(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitRuntime
}
