package main

import (
	"context"
	"strings"
	"testing"
)

// --verify takes lazy or strict; anything else is refused before any I/O,
// naming the flag and the allowed values.
func TestVerifyFlag(t *testing.T) {
	f := partsFlags{Platform: "linux/amd64", CacheSize: defaultCacheSize, BlockSize: defaultBlockSize,
		Spacing: defaultSpacing, Parallel: 4, LogLevel: "warn", LogFormat: "text", API: "auto", Verify: "paranoid"}
	_, err := newParts(context.Background(), f, "127.0.0.1:1", partsUse{})
	if err == nil || !strings.Contains(err.Error(), "--verify") || !strings.Contains(err.Error(), "lazy or strict") {
		t.Errorf("--verify paranoid: got %v, want an error naming --verify and lazy or strict", err)
	}
}
