package layerindex

// Index is a layer's tar entries.
type Index struct {
	entries []*Entry
}
