package fs

import "errors"

// Until registry/errors.go lands, toErrno matches these; they become
// registry.ErrNotFound and registry.ErrUnauthorized then.
var (
	errNotFound     = errors.New("not found")
	errUnauthorized = errors.New("unauthorized")
)
