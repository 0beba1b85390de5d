// Package registry is regfs's client for container-image registries: the OCI
// Distribution (Docker Registry v2) API and the legacy Docker Registry v1 API,
// behind one small interface (Client) so that callers never ask which API they
// talk to. New probes GET /v2/ and falls back to v1 when the host has none.
//
// It knows HTTP, authentication, retries and the registry APIs. It knows
// nothing about files, FUSE or caching: it must never cache blob bytes (that
// is layercache's job) and never parse layer tars (that is layerindex's job).
// It must never return bytes that failed a digest check, and never bytes from
// an offset other than the one asked for.
//
// A blob handle (a blobio.Source) is one immutable blob with Size and a
// ReadAt that resumes a dropped connection with a new Range request, so a
// caller sees the right bytes or an error, never a short or wrong read. Both
// APIs read blobs through one resumableReader (resumable.go). The v1 client
// is the v1*.go files; its test server is registrytest's v1*.go files.
//
// Authentication (the ping, the WWW-Authenticate challenge, Basic, Bearer
// tokens with the right scope and their refresh on 401, credentials from
// ~/.docker/config.json and credential helpers) is go-containerregistry's
// authn and remote/transport packages, one transport per scope. What regfs
// adds around it are small http.RoundTripper layers that both APIs share
// (pipeline.go draws the stack): retries with back-off that honour
// Retry-After and end when the caller's context does, a watchdog for
// stalled responses, a guard that keeps plain HTTP to loopback hosts unless
// the caller asks for it, a guard that keeps Authorization off redirects to
// other hosts, and a memory of blobs' storage redirects. A registry on a
// loopback, private or link-local IP address must name its token server by
// host name unless the realm is its own host:port: go-containerregistry
// refuses other such realms.
//
// Errors: *HTTPError models the registry's error body; errors.Is maps it to
// ErrNotFound and ErrUnauthorized, *DigestError to ErrDigestMismatch, and
// IsTemporary says whether trying again later may help. fs/ maps these to
// errnos.
package registry
