// Package registrytest is the test infrastructure every regfs package
// reuses: a real registry, real test images, and a proxy that misbehaves on
// demand. It is an ordinary (non-test) package, like net/http/httptest, so
// other packages' tests, benchmarks and the scripts/testimages program can
// import it.
//
// # Reference registry
//
// StartRegistry(t, opts...) runs distribution/v3's handlers.App in-process
// on 127.0.0.1:<free port> with filesystem storage in t.TempDir(), and stops
// it in t.Cleanup; Start(ctx, Config) and Registry.Close do the same outside
// tests. The catalog is on (1000 entries per page at most). Options:
// WithHtpasswd(user, pass) for HTTP Basic auth; WithTokenAuth(user, pass,
// WithAnonymousPull(), WithTokenExpiry(d)) for Bearer tokens from our own
// token endpoint; WithInMemoryStorage() for faster pushes of small images
// (distribution's in-memory driver is very slow for large blobs: use it with
// WithoutLarge); WithPullThrough(originURL) for a pull-through cache of
// another registry (distribution's proxy mode; pushes are refused, content
// is kept forever); WithDir, WithAddr, WithDelete, WithCatalogMaxEntries,
// WithLogLevel, WithRequestLogs.
//
// The token endpoint is served at TokenPath on the registry's own
// host:port, because go-containerregistry refuses a token realm on another
// loopback address. The registry names the realm after the request's Host,
// so behind a FaultProxy the realm is the proxy's. Tokens are ES256 JWTs
// with an x5c header, scoped to what was asked for (anonymous: pull only,
// no catalog). Distribution accepts tokens 60 s past "exp"; for shorter
// expiries the token server back-dates "exp" so a token really fails after
// the expiry (to the next whole second).
//
// Registry.Stats counts the v2 API requests it served (by method and path)
// and the response body bytes written (blob bytes apart); Requests returns
// each request with its Range, Authorization scheme, status, bytes, and
// whether its handler has returned (Done).
// Token requests are not in Stats: TokenServer keeps its own log.
// Distribution logs through logrus's standard logger; its per-request lines
// are filtered out of that logger's output unless WithRequestLogs.
//
// # Images
//
// A layer is a list of Entry values (File, GeneratedFile, Dir, Symlink,
// Hardlink, CharDevice, BlockDevice, Fifo, Whiteout, Opaque, adjusted with
// WithMode, WithOwner, WithModTime, WithXattr) built by BuildLayer with a
// Compression (Gzip, Zstd, Uncompressed, EStargz). BuildImage adds a config
// (platform, created, history with empty_layer entries, diff_ids) and an OCI
// or Docker schema2 manifest; BuildIndex makes an OCI index or Docker
// manifest list. Everything is deterministic. Built values keep what tests
// compare against: raw manifest and config bytes and digests, each layer's
// blob digest, size, media type and diff_id, the entries, and the
// uncompressed tar (Layer.WriteTarTo / TarBytes regenerate it).
// MergeLayers/Image.RootFS compute the merged tree a runtime would show.
//
// A Pusher pushes over the real v2 API (HEAD, POST upload, PUT ?digest=,
// manifest PUT; index after its children), with go-containerregistry's
// transport doing the auth handshake.
//
// # Fixtures
//
// PushFixtures(t, reg) pushes the standard set (see Fixtures and the Repo*
// constants): test/small:latest (OCI, 3 gzip layers covering every tar
// feature, see SmallLayerEntries) and :docker, test/multi:latest (OCI
// index, linux/amd64, linux/arm64/v8, linux/s390x) and :docker (manifest
// list), test/compress:zstd|none|estargz, test/large:latest (one gzip layer
// of LargeEntries(seed, size), default 64 MiB of content, cached on disk
// under LargeCacheDir() keyed by seed, size and format version),
// test/deep/nested/repo:v1, and test/paging with 25 tags. It then resets the
// registry's counters. PushFixturesTo does the same without testing.T.
// Images are built once per process.
//
// # Fault proxy
//
// StartFaultProxy(t, reg.URL) forwards to the registry keeping the client's
// Host, passing redirects through, never compressing. Faults are switched
// on with Add(Fault) or the helpers CutBody, CutBodyEvery, FailStatus (with
// Retry-After), StallHeaders, StallBody, DropRequests, IgnoreRange, for the
// next k matching requests, every k-th, or all, selected by a predicate
// (BlobGETs, ManifestRequests, PathContains, Not); DropEveryConnection
// closes every k-th TCP connection. EnableBlobRedirect answers blob GETs
// with 307 to a second listener that serves the bytes (with Range) and
// counts requests carrying an Authorization header.
//
// # v1 server
//
// StartV1Server(t, opts...) runs a Docker Registry v1 index and registry
// (v1server.go: options, faults, request log; v1images.go: images, IDs,
// tarsums; v1handlers.go: the routes). V1With* options turn on token and
// cookie checks, Basic auth, extra listeners as endpoints, and servers
// without Range, size headers or search; InjectFault makes one host or path
// fail, stall or cut a body; SetEndpoints and SetLayerRedirect shape the
// handshake and the layer URLs.
//
// This package must never reach beyond 127.0.0.1, and never be imported by
// regfs's production code (only tests, benchmarks and scripts).
package registrytest
