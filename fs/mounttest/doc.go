// Package mounttest holds the tests that really mount regfs: go-fuse on
// /dev/fuse against the real registry (registrytest's distribution/v3 server
// and its v1 server), both in the test process (the FUSE server on its own
// goroutines) and through the regfs binary run as a subprocess (exit status
// after fusermount3 -u and after SIGTERM, --daemon).
//
// The tests skip when FUSE cannot be used here (no /dev/fuse, or neither
// root nor fusermount3). It has no non-test code beyond this file.
package mounttest
