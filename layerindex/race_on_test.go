//go:build race

package layerindex

// raceEnabled shrinks test data: the race detector slows the inflater ~30x.
const raceEnabled = true
