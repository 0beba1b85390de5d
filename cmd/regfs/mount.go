package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	regfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// mountFlags are the flags of `regfs mount`; also shown, as JSON, in
// .regfs/config (there are no secrets among them).
type mountFlags struct {
	API           string        `json:"api"`
	Platform      string        `json:"platform"`
	CacheSize     byteSize      `json:"cache_size"`
	BlockSize     byteSize      `json:"block_size"`
	CacheDir      string        `json:"cache_dir"`
	DiskCacheSize byteSize      `json:"disk_cache_size"`
	TagTTL        time.Duration `json:"tag_ttl"`
	Timeout       time.Duration `json:"timeout"`
	PlainHTTP     bool          `json:"plain_http"`
	AllowOther    bool          `json:"allow_other"`
	LogLevel      string        `json:"log_level"`
	LogFormat     string        `json:"log_format"`
	LogFile       string        `json:"log_file,omitempty"`
	Daemon        bool          `json:"daemon"`
	DebugFUSE     bool          `json:"debug_fuse"`
}

const readyFDEnv = "REGFS_READY_FD"

func defaultCacheDir() string {
	d, err := os.UserCacheDir() // $XDG_CACHE_HOME, else ~/.cache
	if err != nil {
		return ""
	}
	return filepath.Join(d, "regfs")
}

func newMountCommand() *cobra.Command {
	f := mountFlags{
		CacheSize:     512 << 20,
		BlockSize:     1 << 20,
		DiskCacheSize: 10 << 30,
	}
	cmd := &cobra.Command{
		Use:   "mount [flags] REGISTRY MOUNTPOINT",
		Short: "Mount a registry on MOUNTPOINT",
		Long: `Mount REGISTRY (host[:port], e.g. ghcr.io, docker.io or 127.0.0.1:5000) on
MOUNTPOINT, read-only, and serve it until unmounted.

The tree:
  MOUNTPOINT/<repository path>/           one directory per path component
  MOUNTPOINT/<repo>:<tag>/                an image, beside the repo's last component
  MOUNTPOINT/<repo>@sha256:<hex>/         any manifest by digest
    manifest.json  index.json  platforms/<os>-<arch>[-<variant>]/
    config.json  json  ancestry
    layers/<id>/{json,blob,layer.tar,digest}

Names the registry's catalog does not list still resolve when looked up.
Unmount with "fusermount3 -u MOUNTPOINT", or stop regfs with Ctrl-C/SIGTERM.`,
		Example: `  # Docker Hub (no catalog: look names up directly)
  regfs mount docker.io /mnt/hub &
  cat /mnt/hub/library/alpine:3.19/config.json

  # GHCR, an arm64 view of multi-platform images, in the background
  regfs mount --daemon --platform linux/arm64/v8 ghcr.io /mnt/ghcr

  # A local registry over plain HTTP
  regfs mount --plain-http localhost:5000 /mnt/local
  tar -tvf /mnt/local/myapp:latest/layers/*/layer.tar
  fusermount3 -u /mnt/local`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Daemon && os.Getenv(readyFDEnv) == "" {
				return daemonize(args[1])
			}
			return runMount(cmd.Context(), f, args[0], args[1])
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&f.API, "api", registry.APIAuto, "registry API: auto (v2, falling back to v1), v2 or v1")
	fl.StringVar(&f.Platform, "platform", registry.HostPlatform().String(), "platform shown in the directory of a multi-platform image (os/arch[/variant])")
	fl.Var(&f.CacheSize, "cache-size", "memory block cache bound")
	fl.Var(&f.BlockSize, "block-size", "cache block size: the unit of every ranged fetch")
	fl.StringVar(&f.CacheDir, "cache-dir", defaultCacheDir(), `disk cache and layer index directory ("" for none)`)
	fl.Var(&f.DiskCacheSize, "disk-cache-size", "disk cache bound")
	fl.DurationVar(&f.TagTTL, "tag-ttl", regfs.DefaultTagTTL, "how long tag lists and tag → digest answers are trusted")
	fl.DurationVar(&f.Timeout, "timeout", regfs.DefaultOpTimeout, "bound on any one filesystem operation")
	fl.BoolVar(&f.PlainHTTP, "plain-http", false, "speak plain HTTP to the registry (always allowed for loopback hosts)")
	fl.BoolVar(&f.AllowOther, "allow-other", false, "let other users read the mount (non-root needs user_allow_other in /etc/fuse.conf)")
	fl.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.LogFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.LogFile, "log-file", "", "write logs to this file instead of stderr")
	fl.BoolVar(&f.Daemon, "daemon", false, "run in the background; return once the mount answers")
	fl.BoolVar(&f.DebugFUSE, "debug-fuse", false, "log every FUSE request")
	fl.MarkHidden("debug-fuse")
	return cmd
}

func newLogger(f mountFlags) (*logrus.Logger, error) {
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

// runMount mounts and serves until unmounted (exit 0) or a setup error.
func runMount(ctx context.Context, f mountFlags, host, mountpoint string) (err error) {
	// In a daemon child, say how setup ended on the ready pipe.
	ready := readyPipe()
	defer func() {
		if ready != nil && err != nil {
			fmt.Fprintf(ready, "%v\n", err)
			ready.Close()
		}
	}()
	if ctx == nil {
		ctx = context.Background()
	}
	log, err := newLogger(f)
	if err != nil {
		return err
	}
	platform, err := registry.ParsePlatform(f.Platform)
	if err != nil {
		return fmt.Errorf("--platform: %w", err)
	}
	if f.BlockSize <= 0 {
		return fmt.Errorf("--block-size must be positive")
	}

	setupCtx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	client, err := registry.New(setupCtx, host, registry.Options{
		API: f.API, PlainHTTP: f.PlainHTTP, Logger: logrus.NewEntry(log),
	})
	if err != nil {
		return err
	}
	diskDir, indexDir := "", ""
	if f.CacheDir != "" {
		diskDir, indexDir = filepath.Join(f.CacheDir, "blocks"), filepath.Join(f.CacheDir, "indexes")
	}
	cache, err := layercache.New(layercache.Options{
		BlockSize: int64(f.BlockSize), MemoryBytes: int64(f.CacheSize),
		DiskDir: diskDir, DiskBytes: int64(f.DiskCacheSize), Logger: log,
	})
	if err != nil {
		return err
	}
	// Caches close only after the server has stopped: no read can be in flight.
	defer cache.Close()
	index, err := layerindex.NewManager(layerindex.Options{Dir: indexDir, ReadSize: int64(f.BlockSize)})
	if err != nil {
		return err
	}
	started := time.Now()
	root, err := regfs.NewRoot(regfs.Options{
		Client: client, Cache: cache, Index: index, Platform: platform,
		TagTTL: f.TagTTL, OpTimeout: f.Timeout, Log: log,
		Status: &regfs.Status{
			Version: versionString(),
			Config: struct {
				Registry   string `json:"registry"`
				Mountpoint string `json:"mountpoint"`
				API        string `json:"api_in_use"`
				mountFlags
			}{host, mountpoint, client.API(), f},
			Stats: func() any {
				return map[string]any{"uptime_seconds": int64(time.Since(started).Seconds()), "cache": cache.Stats()}
			},
		},
	})
	if err != nil {
		return err
	}
	server, err := root.Mount(mountpoint, regfs.MountConfig{AllowOther: f.AllowOther, Debug: f.DebugFUSE})
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", host, mountpoint, err)
	}
	log.WithFields(logrus.Fields{"registry": host, "mountpoint": mountpoint, "api": client.API()}).Info("mounted")
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
		ready = nil
	}
	serve(server, mountpoint, log)
	log.WithField("mountpoint", mountpoint).Info("unmounted")
	return nil
}

// serve waits until the mount goes away: unmounted from outside
// (fusermount3 -u), or on SIGINT/SIGTERM unmounted here.
func serve(server *fuse.Server, mountpoint string, log logrus.FieldLogger) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case s := <-sigs:
		log.WithField("signal", s.String()).Info("unmounting")
	}
	if err := server.Unmount(); err != nil {
		// Busy (a file is open, a shell is cd'ed in): detach now, the
		// kernel finishes when the last user lets go.
		log.WithError(err).Warn("unmount failed; detaching lazily")
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
			log.WithError(err).Error("lazy unmount failed")
		}
	}
	select {
	case <-done:
	case <-sigs:
		log.Warn("second signal: exiting without waiting for the mount to go")
	}
}

// readyPipe is the write end of the daemon parent's pipe, if this process
// is a daemon child.
func readyPipe() *os.File {
	fd := os.Getenv(readyFDEnv)
	if fd == "" {
		return nil
	}
	os.Unsetenv(readyFDEnv)
	var n int
	if _, err := fmt.Sscan(fd, &n); err != nil {
		return nil
	}
	return os.NewFile(uintptr(n), "ready")
}

// daemonize re-runs this command in a new session with the same flags and
// returns once the child reports the mount ready and the mount answers.
func daemonize(mountpoint string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer devnull.Close()
	var args []string
	for _, a := range os.Args[1:] {
		if a != "--daemon" && !strings.HasPrefix(a, "--daemon=") {
			args = append(args, a)
		}
	}
	// The child's stdout/stderr are /dev/null (or --log-file): a parent
	// shell waiting on our output must not wait on the daemon's too.
	proc, err := os.StartProcess(exe, append([]string{exe}, args...), &os.ProcAttr{
		Env:   append(os.Environ(), readyFDEnv+"=3"),
		Files: []*os.File{devnull, devnull, devnull, pw},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	pw.Close()
	if err != nil {
		pr.Close()
		return fmt.Errorf("daemon: start: %w", err)
	}
	msg, _ := io.ReadAll(pr)
	pr.Close()
	if strings.TrimSpace(string(msg)) != "ok" {
		st, _ := proc.Wait()
		if len(msg) == 0 {
			return fmt.Errorf("daemon exited before mounting (%v)", st)
		}
		return errors.New(strings.TrimSpace(string(msg)))
	}
	proc.Release()
	// The mount answers through the kernel: a statfs reaches the daemon.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mountpoint, &st); err != nil {
		return fmt.Errorf("daemon mounted, but %s does not answer: %w", mountpoint, err)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("daemon reported ready, but %s is not a FUSE mount", mountpoint)
	}
	return nil
}

const fuseSuperMagic = 0x65735546
