package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/metastore"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// partsFlags are the flags of every command that reads a registry through
// the cache (mount, prefetch), defined once here so both agree on names and
// defaults: a prefetch must fill exactly the cache a mount will read (blocks
// are keyed by block size too). Their JSON names appear in .regfs/config.
type partsFlags struct {
	API           string   `json:"api"`
	Platform      string   `json:"platform"`
	PlainHTTP     bool     `json:"plain_http"`
	CacheSize     byteSize `json:"cache_size"`
	BlockSize     byteSize `json:"block_size"`
	CacheDir      string   `json:"cache_dir"`
	DiskCacheSize byteSize `json:"disk_cache_size"`
	Spacing       byteSize `json:"checkpoint_spacing"`
	Parallel      int      `json:"parallel_fetches"`
	Verify        string   `json:"verify"`
	Published     string   `json:"published_indexes"`
	LogLevel      string   `json:"log_level"`
	LogFormat     string   `json:"log_format"`
	LogFile       string   `json:"log_file,omitempty"`
}

// Flag defaults shared by mount and prefetch.
const (
	publishedAuto        = "auto"
	publishedOff         = "off"
	defaultCacheSize     = 512 << 20
	defaultBlockSize     = 1 << 20
	defaultDiskCacheSize = 10 << 30
	// defaultSpacing: a random read of a gzip layer inflates up to this
	// much before its first byte.
	defaultSpacing = 2 << 20
	// minSpacing: each checkpoint keeps a 32 KiB window; closer than this
	// the index would be mostly windows.
	minSpacing = 128 << 10
)

func defaultCacheDir() string {
	d, err := layercache.DefaultDiskDir()
	if err != nil {
		return "" // no home: the user must pass --cache-dir
	}
	return d
}

// addPartsFlags registers the registry and cache flags on cmd and sets
// their defaults in f.
func addPartsFlags(cmd *cobra.Command, f *partsFlags) {
	f.CacheSize, f.BlockSize, f.DiskCacheSize, f.Spacing = defaultCacheSize, defaultBlockSize, defaultDiskCacheSize, defaultSpacing
	f.Parallel = layercache.DefaultMaxParallel
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&f.API, "api", registry.APIAuto, "registry API: auto (v2, falling back to v1), v2 or v1")
	fl.StringVar(&f.Platform, "platform", registry.HostPlatform().String(), "platform chosen from a multi-platform image (os/arch[/variant])")
	fl.BoolVar(&f.PlainHTTP, "plain-http", false, "speak plain HTTP to the registry (always allowed for loopback hosts)")
	fl.Var(&f.CacheSize, "cache-size", "memory block cache bound (at least 4 blocks; sizes as 512M, 1.5G, 2GiB)")
	fl.Var(&f.BlockSize, "block-size", "cache block size, 4K to 64M: the unit of every ranged fetch (fixed per --cache-dir: mount and prefetch must agree)")
	fl.StringVar(&f.CacheDir, "cache-dir", defaultCacheDir(), `disk cache and layer index directory ("" for none)`)
	fl.Var(&f.DiskCacheSize, "disk-cache-size", "disk cache bound (at least 4 blocks)")
	fl.IntVar(&f.Parallel, "parallel-fetches", f.Parallel, "ranged requests one open file keeps in flight for its misses and readahead, 1 to 64 (a sequential read of a registry blob streams with one request instead)")
	fl.StringVar(&f.Verify, "verify", "lazy", "when layer bytes are served: lazy (as they arrive; a whole in-order read checks the digest) or strict (a blob is read whole and checked before its first byte is served)")
	fl.StringVar(&f.Published, "published-indexes", publishedAuto, "auto: a gzip layer uses the layer index published in the image's own repository (regfs index push), if any, before indexing the layer itself; off: never looks")
	fl.Var(&f.Spacing, "checkpoint-spacing", "uncompressed distance between gzip checkpoints of a new layer index: smaller fetches and inflates less per random read, for a larger index (128K to 1G)")
}

// addLogFlags registers the logging flags; separate from addPartsFlags so
// they come last in --help. level is the default --log-level.
func addLogFlags(cmd *cobra.Command, f *partsFlags, level string) {
	fl := cmd.Flags()
	fl.StringVar(&f.LogLevel, "log-level", level, "log level: debug, info, warn or error")
	fl.StringVar(&f.LogFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.LogFile, "log-file", "", "write logs to this file instead of stderr")
}

func newLogger(f partsFlags) (*logrus.Logger, error) {
	log := logrus.New()
	lvl, err := logrus.ParseLevel(f.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.LogLevel)
	}
	log.SetLevel(lvl)
	switch f.LogFormat {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", f.LogFormat)
	}
	if f.LogFile != "" {
		out, err := os.OpenFile(f.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		log.SetOutput(out)
	}
	return log, nil
}

// parts are what a command builds from partsFlags: the session (registry
// client → block cache → layer index manager, wired in the data flow's
// order), and the block cache it owns.
type parts struct {
	log      *logrus.Logger
	platform registry.Platform
	session  *session.Session
	cache    *layercache.Cache
}

// partsUse is how a command reads through the parts: session.Options'
// IndexReads and DetachIndexBuilds (the client, cache, store and index
// options come from the flags), and whether it starts with the registry
// unreachable.
type partsUse struct {
	session.Options
	// offline: a registry that cannot be reached at start-up is not an
	// error when the metadata store has answers from it (a mount serves
	// what the caches hold); an API probe that fails so is taken for v2,
	// the only API whose content is kept by digest.
	offline bool
}

// newParts builds the parts for the registry at host, read as use says.
// ctx bounds only the setup (the client's probe of the registry). Close the
// result when done, after everything that reads through it has stopped.
func newParts(ctx context.Context, f partsFlags, host string, use partsUse) (*parts, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	log, err := newLogger(f)
	if err != nil {
		return nil, err
	}
	platform, err := registry.ParsePlatform(f.Platform)
	if err != nil {
		return nil, fmt.Errorf("--platform: %w", err)
	}
	diskDir := ""
	if f.CacheDir != "" {
		diskDir = diskTierDir(f.CacheDir)
		if err := stampBlockSize(f, diskDir); err != nil {
			return nil, err
		}
	}
	verify, err := layercache.ParseVerifyMode(f.Verify)
	if err != nil {
		return nil, fmt.Errorf("--verify: %w", err)
	}
	meta := metastore.Memory()
	if f.CacheDir != "" {
		if meta, err = metastore.Open(metaStoreDir(f.CacheDir), log); err != nil {
			return nil, err
		}
	}
	ro := registry.Options{
		API: f.API, PlainHTTP: f.PlainHTTP, Logger: logrus.NewEntry(log), Content: meta,
		// Every blob is read through the cache, which hashes what it
		// reads against the blob's digest: once is enough.
		UnverifiedStreams: true,
	}
	client, err := registry.New(ctx, host, ro)
	if err != nil && use.offline && ro.API != registry.APIV1 && registry.IsUnreachable(err) && hasRecords(meta, host) {
		// Start anyway: what the caches hold serves without the registry,
		// and everything else is fetched once it answers again.
		log.WithError(err).Warnf("registry %s unreachable: serving cached content until it answers", host)
		ro.API = registry.APIV2
		client, err = registry.New(ctx, host, ro)
	}
	if err != nil {
		return nil, err
	}
	cache, err := layercache.New(layercache.Options{
		BlockSize: int64(f.BlockSize), MemoryBytes: int64(f.CacheSize),
		DiskDir: diskDir, DiskBytes: int64(f.DiskCacheSize), MaxParallel: f.Parallel, Verify: verify, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	use.Client, use.Cache, use.Meta, use.Log = client, cache, meta, log
	use.Index = layerindex.Options{Store: cache, Spacing: int64(f.Spacing), Logger: log}
	use.PublishedIndexes = f.Published != publishedOff
	sess, err := session.New(use.Options)
	if err != nil {
		cache.Close()
		return nil, err
	}
	setMemoryLimit(f)
	return &parts{log: log, platform: platform, session: sess, cache: cache}, nil
}

// hasRecords reports whether meta holds answers from host: only then is
// there anything to serve without it (a mistyped host must still fail).
func hasRecords(meta *metastore.Store, host string) bool {
	refs, err := meta.Refs()
	if err != nil {
		return false
	}
	for _, r := range refs {
		if r.Registry == host {
			return true
		}
	}
	return false
}

// stampBlockSize pins the disk cache to --block-size: blocks of another
// size are never read, so a prefetch and a mount that disagree would share
// nothing, silently. Refused instead, with the way out.
func stampBlockSize(f partsFlags, diskDir string) error {
	err := layercache.StampBlockSize(diskDir, int64(f.BlockSize))
	var mm *layercache.BlockSizeMismatchError
	if errors.As(err, &mm) {
		was := byteSize(mm.Stamped)
		return fmt.Errorf("--block-size %s: the disk cache in %s holds %s blocks (filled with --block-size %s), which this block size would never read: "+
			"pass --block-size %s, or another --cache-dir, or empty it with \"regfs cache clear --cache-dir %s\"",
			&f.BlockSize, f.CacheDir, &was, &was, &was, f.CacheDir)
	}
	if err != nil {
		return fmt.Errorf("--cache-dir %s: %w", f.CacheDir, err)
	}
	return nil
}

// memoryAllowance is what regfs holds besides the memory block cache when
// every part is at its bound (layerindex's decoders and caches, FUSE
// buffers, the runtime); docs/design/wiring.md itemises it.
const memoryAllowance = 256 << 20

// setMemoryLimit sets the garbage collector's soft limit to the memory
// cache size plus memoryAllowance and 16 blocks, so the heap does not grow
// to twice the live data (GOGC=100) before a collection. A GOMEMLIMIT set
// by the user wins.
func setMemoryLimit(f partsFlags) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(int64(f.CacheSize) + memoryAllowance + 16*int64(f.BlockSize))
}

// Close waits for the cache's fetches and disk writes and stops it.
func (p *parts) Close() error { return p.cache.Close() }
