package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// duration is a flag value written as Go durations are (30s, 5m, 1h30m),
// shown in --help and .regfs/config the same way ("5m", not "5m0s" or
// 300000000000).
type duration time.Duration

func (d *duration) String() string { return formatDuration(time.Duration(*d)) }

// formatDuration is d.String() without the zero tails Go adds: 5m, 1h.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (d *duration) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit: 500ms, 30s, 5m, 1h", s)
	}
	*d = duration(v)
	return nil
}

func (d *duration) Type() string { return "duration" }

// MarshalJSON shows the duration as --help does ("30s").
func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(formatDuration(time.Duration(d)))
}
