//go:build !race

package layerindex

const raceEnabled = false
