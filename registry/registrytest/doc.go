// Package registrytest is the test infrastructure every regfs package reuses:
// a real, in-process reference registry (distribution/v3) on 127.0.0.1 with
// optional htpasswd or token auth and server-side counters.
//
// It is an ordinary (non-test) package, like net/http/httptest, so other
// packages' tests, benchmarks and the demo programs can import it.
//
// It must never reach beyond 127.0.0.1, and never be imported by regfs's
// production code.
package registrytest
