package layercache

// flightTable is single-flight: the flight bringing each block, so every
// reader of a block finds the one fetch of it. It also answers where a
// block is held now. Guarded by scheduler.mu.
type flightTable struct {
	m     map[blockKey]*flight
	store blockStore
}

// get returns the flight bringing block i of b, or nil.
func (t *flightTable) get(b *blob, i int64) *flight { return t.m[b.block(i)] }

// set registers f as the flight bringing block i of b.
func (t *flightTable) set(b *blob, i int64, f *flight) { t.m[b.block(i)] = f }

// forget unregisters block i of b if f is the flight bringing it.
func (t *flightTable) forget(b *blob, i int64, f *flight) {
	if k := b.block(i); t.m[k] == f {
		delete(t.m, k)
	}
}

// held reports whether block i of b is in memory, with priv (a SkipMemory
// reader's blocks), or being brought by a flight: present other than on
// disk.
func (t *flightTable) held(b *blob, priv *privateBlocks, i int64) bool {
	return t.present(b, priv, i, 0)
}

// present is held, or on disk as far as disk (tierDiskIndex, tierDisk or
// none) tells.
func (t *flightTable) present(b *blob, priv *privateBlocks, i int64, disk tiers) bool {
	return t.m[b.block(i)] != nil || priv.has(i) || t.store.has(b, i, tierMemory|disk)
}
