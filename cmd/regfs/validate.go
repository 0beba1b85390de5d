package main

import (
	"fmt"
	"time"

	"github.com/regfs/regfs/registry"
)

// Allowed ranges of the flags; every refusal names its range.
const (
	// Blocks are the unit of every ranged request and cache file: below
	// 4K a read costs a request per few bytes and a file per block; above
	// 64M one miss fetches more than any read needs.
	minBlockSize = 4 << 10
	maxBlockSize = 64 << 20
	// The memory and disk bounds hold at least a few blocks, or every
	// read evicts the block the next one needs.
	minCacheBlocks = 4
	maxSpacing     = 1 << 30
	maxParallel    = 64
	maxTagTTL      = 24 * time.Hour
	minTimeout     = time.Second
	maxTimeout     = 24 * time.Hour
)

// validate checks every flag shared by mount and prefetch against its
// allowed range, before anything is started.
func (f *partsFlags) validate() error {
	switch f.API {
	case registry.APIAuto, registry.APIV2, registry.APIV1:
	default:
		return fmt.Errorf("--api %q: want auto, v2 or v1", f.API)
	}
	if _, err := registry.ParsePlatform(f.Platform); err != nil {
		return fmt.Errorf("--platform: %w", err)
	}
	if f.BlockSize < minBlockSize || f.BlockSize > maxBlockSize {
		return fmt.Errorf("--block-size %s: want %s to %s", &f.BlockSize, formatSize(minBlockSize), formatSize(maxBlockSize))
	}
	if least := minCacheBlocks * f.BlockSize; f.CacheSize < least {
		return fmt.Errorf("--cache-size %s: want at least %d blocks of --block-size %s: %s", &f.CacheSize, minCacheBlocks, &f.BlockSize, formatSize(int64(least)))
	}
	if least := minCacheBlocks * f.BlockSize; f.CacheDir != "" && f.DiskCacheSize < least {
		return fmt.Errorf("--disk-cache-size %s: want at least %d blocks of --block-size %s: %s", &f.DiskCacheSize, minCacheBlocks, &f.BlockSize, formatSize(int64(least)))
	}
	if f.Parallel < 1 || f.Parallel > maxParallel {
		return fmt.Errorf("--parallel-fetches %d: want at least 1 and at most %d", f.Parallel, maxParallel)
	}
	if f.Spacing < minSpacing || f.Spacing > maxSpacing {
		return fmt.Errorf("--checkpoint-spacing %s: want at least %s and at most %s (each checkpoint keeps a 32 KiB window)", &f.Spacing, humanBytes(minSpacing), humanBytes(maxSpacing))
	}
	switch f.Published {
	case publishedAuto, publishedOff, "": // "": a partsFlags not made by addPartsFlags, auto
	default:
		return fmt.Errorf("--published-indexes %q: want auto or off", f.Published)
	}
	switch f.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", f.LogFormat)
	}
	switch f.LogLevel {
	case "debug", "info", "warn", "warning", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", f.LogLevel)
	}
	return nil
}

// validate checks the flags of regfs mount.
func (f *mountFlags) validate() error {
	if err := f.partsFlags.validate(); err != nil {
		return err
	}
	if f.TagTTL <= 0 || time.Duration(f.TagTTL) > maxTagTTL {
		return fmt.Errorf("--tag-ttl %s: want more than 0 and at most %s", &f.TagTTL, formatDuration(maxTagTTL))
	}
	if time.Duration(f.Timeout) < minTimeout || time.Duration(f.Timeout) > maxTimeout {
		return fmt.Errorf("--timeout %s: want %s to %s", &f.Timeout, formatDuration(minTimeout), formatDuration(maxTimeout))
	}
	return nil
}
