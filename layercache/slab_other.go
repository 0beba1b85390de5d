//go:build !linux

package layercache

// allocSlab returns n bytes of ordinary memory.
func allocSlab(n int) []byte { return make([]byte, n) }
