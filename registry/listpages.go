package registry

import "context"

type listPagesKey struct{}

// WithListPages returns ctx under which Catalog and Tags hand each page's
// names to pages as it arrives, in the registry's order, before the next
// page is asked for: a caller can show the first pages of a long listing
// while the rest is fetched. The listing's result is still the whole
// sorted list; a page may be handed over again if the listing is retried,
// and an answer that comes from anywhere but the registry's pages (a
// client serving records offline) hands over none. pages must not keep
// the slice past its return.
func WithListPages(ctx context.Context, pages func(names []string)) context.Context {
	return context.WithValue(ctx, listPagesKey{}, pages)
}

// listPagesOf is the page function ctx carries, or nil.
func listPagesOf(ctx context.Context) func([]string) {
	f, _ := ctx.Value(listPagesKey{}).(func([]string))
	return f
}
