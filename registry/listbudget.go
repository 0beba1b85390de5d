package registry

import (
	"errors"
	"fmt"
)

// A listing is bounded against a registry whose pages never end (Link
// headers through ever fresh URLs): past any of these it stops with
// ErrListTooLong rather than grow until the operation times out.
const (
	maxListPages = 10000    // pages of one listing
	maxListNames = 1 << 20  // names of one listing
	maxListBytes = 64 << 20 // bytes of those names
)

// ErrListTooLong: a catalog or tag listing passed the bounds one listing
// may take (pages, names, bytes of names) and was stopped.
var ErrListTooLong = errors.New("listing too long")

// listBudget counts what one listing has kept so far.
type listBudget struct {
	names, bytes int
}

// add charges one name kept in size bytes (the name and what comes with
// it), or fails with ErrListTooLong.
func (b *listBudget) add(size int) error {
	b.names++
	b.bytes += size
	switch {
	case b.names > maxListNames:
		return fmt.Errorf("more than %d names: %w", maxListNames, ErrListTooLong)
	case b.bytes > maxListBytes:
		return fmt.Errorf("more than %d bytes of names: %w", maxListBytes, ErrListTooLong)
	}
	return nil
}
