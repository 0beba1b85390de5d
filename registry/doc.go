// Package registry is regfs's client for container-image registries: the OCI
// Distribution (Docker Registry v2) API and the legacy Docker Registry v1 API,
// behind one small interface (Client) so that callers never ask which API they
// talk to.
//
// It knows HTTP, authentication, retries and the registry APIs. It knows
// nothing about files, FUSE or caching: it must never cache blob bytes (that
// is layercache's job) and never parse layer tars (that is layerindex's job).
//
// The heart of the package is Blob: a handle on one immutable blob with
// Size and a ReadAt that resumes a dropped connection with a new Range
// request, so a caller sees the right bytes or an error, never a short or
// wrong read.
package registry
