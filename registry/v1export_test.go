package registry

// Exports for the external v1 tests (package registry_test), which import
// registrytest; an internal test could not without an import cycle once
// registrytest imports registry.

// V1TestOptions are the v1 client's options.
type V1TestOptions = v1Options

// NewV1TestClient is newV1Client.
func NewV1TestClient(host string, opts V1TestOptions) (*v1Client, error) {
	return newV1Client(host, opts)
}
