package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	units "github.com/docker/go-units"
)

// byteSize is a flag value in bytes, written as people write sizes:
// 1048576, 512K, 512MiB, 1.5G, "2 GB". Units are binary whatever the
// spelling (K = 1024): the bounds are of memory and disk, counted in pages
// and blocks. Shown (--help, .regfs/config) in the largest unit that
// keeps it exact to two decimals: 512M, 1.5G.
type byteSize int64

// sizeUnits are the units byteSize shows, largest first.
var sizeUnits = []struct {
	s string
	n int64
}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}

func (b *byteSize) String() string { return formatSize(int64(*b)) }

func formatSize(v int64) string {
	for _, u := range sizeUnits {
		f := float64(v) / float64(u.n)
		if f >= 1 && f*100 == math.Trunc(f*100) {
			return strconv.FormatFloat(f, 'f', -1, 64) + u.s
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

func (b *byteSize) Type() string { return "size" }

// MarshalJSON shows the size as --help does ("512M"), not as a byte count.
func (b byteSize) MarshalJSON() ([]byte, error) { return json.Marshal(formatSize(int64(b))) }

// maxSize bounds every size flag: far above any disk, and far from
// overflowing the arithmetic done with it.
const maxSize = 1 << 60

func parseSize(s string) (int64, error) {
	bad := fmt.Errorf("size %q: want a number of bytes, optionally with a unit: 4096, 512K, 64MiB, 1.5G, 2T", s)
	t := strings.TrimSpace(s)
	// go-units reads "1e3" as a float; exponents are not how sizes are
	// written, and a large one would overflow.
	if t == "" || strings.ContainsAny(t, "eE") {
		return 0, bad
	}
	v, err := units.RAMInBytes(t)
	if err != nil || v < 0 || v > maxSize {
		return 0, bad
	}
	return v, nil
}
