package main

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	f := partsFlags{CacheSize: 128 << 20, BlockSize: 1 << 20}
	for _, tc := range []struct {
		name, env string
		want      int64
	}{
		{"no GOMEMLIMIT", "", 128<<20 + memoryAllowance + 16<<20},
		{"GOMEMLIMIT set: left alone", "1GiB", math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.env)
			debug.SetMemoryLimit(math.MaxInt64)
			setMemoryLimit(f)
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Errorf("memory limit: got %d, want %d", got, tc.want)
			}
		})
	}
}
