package layercache

import (
	"syscall"
	"unsafe"
)

const (
	hugePage     = 2 << 20
	madvHugepage = 14 // MADV_HUGEPAGE
)

// allocSlab maps n bytes of anonymous memory, aligned to and advised for
// transparent huge pages, outside the Go heap (the pool keeps it for the
// life of the process). It returns nil if the mapping fails.
func allocSlab(n int) []byte {
	m, err := syscall.Mmap(-1, 0, n+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil
	}
	off := (hugePage - int(uintptr(unsafe.Pointer(&m[0]))%hugePage)) % hugePage
	s := m[off : off+n : off+n]
	_ = syscall.Madvise(s, madvHugepage) // a hint: without it, 4 KiB pages
	return s
}
