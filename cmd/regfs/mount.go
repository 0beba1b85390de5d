package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	regfs "github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// mountFlags are the flags of `regfs mount`; also shown, as JSON, in
// .regfs/config (there are no secrets among them).
type mountFlags struct {
	partsFlags
	TagTTL     duration `json:"tag_ttl"`
	Timeout    duration `json:"timeout"`
	AllowOther bool     `json:"allow_other"`
	NonEmpty   bool     `json:"allow_non_empty"`
	NoExec     bool     `json:"noexec"`
	Daemon     bool     `json:"daemon"`
	DebugFUSE  bool     `json:"debug_fuse"`
}

const readyFDEnv = "REGFS_READY_FD"

func newMountCommand() *cobra.Command {
	var f mountFlags
	var options []string
	cmd := &cobra.Command{
		Use:   "mount [flags] REGISTRY|REFERENCE MOUNTPOINT",
		Short: "Mount a registry, a repository or one image on MOUNTPOINT",
		Long: `Mount REGISTRY (host[:port], e.g. ghcr.io, docker.io or 127.0.0.1:5000) on
MOUNTPOINT, read-only, and serve it until unmounted.

The tree:
  MOUNTPOINT/<repository path>/           one directory per path component
  MOUNTPOINT/<repo>:<tag>/                an image, beside the repo's last component
  MOUNTPOINT/<repo>@sha256:<hex>/         any manifest by digest
    manifest.json  index.json  platforms/<os>-<arch>[-<variant>]/
    config.json  json  ancestry
    layers/<id>/{json,blob,layer.tar,digest,fs/}  rootfs/
    oci/{oci-layout,index.json,blobs/sha256/<hex>}   an OCI image layout (v2)
    image.tar                             a docker-save archive (v2)
  MOUNTPOINT/<repo>/_tags/<tag>/          the same image directory, without a colon
  MOUNTPOINT/<repo>/_digests/sha256-<hex>/

Names the registry's catalog does not list still resolve when looked up.

Or mount one image, REFERENCE = [host[:port]/]repository:tag or @digest:
its image directory is MOUNTPOINT itself (MOUNTPOINT/rootfs/etc/os-release).
A tag is followed as it moves (--tag-ttl); a digest pins the image. A
repository without tag or digest mounts its tags as MOUNTPOINT/<tag>/ and
its manifests as MOUNTPOINT/sha256:<hex>/. The name is resolved before
mounting: one that does not resolve is refused and nothing is mounted.

An argument without '/' is a registry whenever it is a valid host[:port]
(alpine, node:20 and registry:5000 are hosts); otherwise, as for docker, a
reference whose first component has no '.' or ':' and is not localhost is
on Docker Hub: alpine:3.19 is docker.io/library/alpine:3.19, and
library/node:20 or docker.io/node:20 is Docker Hub's node:20.

Unmount with "fusermount3 -u MOUNTPOINT", or stop regfs with Ctrl-C/SIGTERM.

Every flag is also a mount option: -o cache_size=1G,allow_other,plain_http
(underscores for dashes; a boolean alone sets it). Options apply after flags.
Generic mount options (ro, nofail, _netdev, auto, noauto, user, users,
defaults, x-*, dev, suid, exec, noatime, ...) are accepted and change nothing:
regfs always mounts read-only, nosuid and nodev; rw is refused. So regfs works
as "mount -t fuse.regfs REGISTRY MOUNTPOINT -o ro,..." and in /etc/fstab:
  REGISTRY  /mnt/reg  fuse.regfs  ro,nofail,_netdev,allow_other  0 0
With $NOTIFY_SOCKET set (a systemd Type=notify service), regfs sends READY=1
once the mount answers and STOPPING=1 when it goes.`,
		Example: `  # Docker Hub (no catalog: look names up directly)
  regfs mount docker.io /mnt/hub &
  cat /mnt/hub/library/alpine:3.19/config.json

  # One image: its directory is the mount
  regfs mount --daemon alpine:3.19 /mnt/alpine
  cat /mnt/alpine/rootfs/etc/os-release

  # GHCR, an arm64 view of multi-platform images, in the background
  regfs mount --daemon --platform linux/arm64/v8 ghcr.io /mnt/ghcr

  # A local registry over plain HTTP
  regfs mount --plain-http localhost:5000 /mnt/local
  tar -tvf /mnt/local/myapp:latest/layers/*/layer.tar
  fusermount3 -u /mnt/local

  # As mount(8) and fstab do it (regfs in /usr/local/bin or /usr/bin)
  mount -t fuse.regfs ghcr.io /mnt/ghcr -o ro,allow_other,cache_size=1G`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyMountOptions(cmd.Flags(), options); err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return usageError{err}
			}
			src, err := parseMountSource(args[0])
			if err != nil {
				return err
			}
			if err := regfs.CheckMountpoint(args[1], f.NonEmpty); err != nil {
				return err
			}
			if f.Daemon && os.Getenv(readyFDEnv) == "" {
				return daemonize(args[1])
			}
			return runMount(cmd.Context(), f, src, args[1])
		},
	}
	addPartsFlags(cmd, &f.partsFlags)
	fl := cmd.Flags()
	f.TagTTL, f.Timeout = duration(regfs.DefaultTagTTL), duration(regfs.DefaultOpTimeout)
	fl.Var(&f.TagTTL, "tag-ttl", "how long tag lists and tag → digest answers are trusted (up to 24h)")
	fl.Var(&f.Timeout, "timeout", "bound on any one filesystem operation (1s to 24h)")
	fl.BoolVar(&f.AllowOther, "allow-other", false, "let other users read the mount (non-root needs user_allow_other in /etc/fuse.conf)")
	fl.BoolVar(&f.NonEmpty, "allow-non-empty", false, "mount over a directory that has files (hidden while mounted)")
	fl.BoolVar(&f.NoExec, "noexec", false, "mount noexec: no program in the mount can be executed")
	fl.BoolVar(&f.Daemon, "daemon", false, "run in the background; return once the mount answers")
	fl.StringArrayVarP(&options, "options", "o", nil, "mount options, comma-separated: any flag as name_with_underscores[=value], generic ones (ro, nofail, _netdev, ...) ignored")
	fl.BoolVar(&f.DebugFUSE, "debug-fuse", false, "log every FUSE request")
	fl.MarkHidden("debug-fuse")
	addLogFlags(cmd, &f.partsFlags, "info")
	registerFlagCompletions(cmd)
	return cmd
}

// runMount mounts src (a registry, or one repository or image of it) and
// serves until unmounted (exit 0) or a setup error.
func runMount(ctx context.Context, f mountFlags, src registry.Reference, mountpoint string) (err error) {
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
	setupCtx, cancel := context.WithTimeout(ctx, time.Duration(f.Timeout))
	defer cancel()
	// Index builds detached: a timed-out FUSE operation must not stop a
	// pass the next one waits for.
	host := src.Registry
	p, err := newParts(setupCtx, f.partsFlags, host, partsUse{Options: session.Options{DetachIndexBuilds: true, PublishedTTL: time.Duration(f.TagTTL)}, offline: true})
	if err != nil {
		return err
	}
	// Caches close only after the server has stopped: no read can be in flight.
	defer p.Close()
	log, client, cache := p.log, p.session.Client(), p.cache
	started := time.Now()
	// what is mounted: the registry, or one repository or image of it.
	what, mounted, ident := host, "", ""
	if src.Repository != "" {
		what, mounted = src.String(), src.String()
		if src.Tag != "" || src.Digest != "" {
			ident = src.Identifier()
		}
	}
	root, err := regfs.NewRoot(regfs.Options{
		Repository: src.Repository, Reference: ident,
		Session: p.session, Platform: p.platform,
		TagTTL: time.Duration(f.TagTTL), OpTimeout: time.Duration(f.Timeout), Log: log,
		Status: &regfs.Status{
			Version: versionString(),
			Config: struct {
				Registry   string `json:"registry"`
				Mounted    string `json:"mounted,omitempty"` // the reference, for one repository or image
				Mountpoint string `json:"mountpoint"`
				API        string `json:"api_in_use"`
				mountFlags
			}{host, mounted, mountpoint, client.API(), f},
			Stats: func() any {
				return map[string]any{"uptime_seconds": int64(time.Since(started).Seconds()), "cache": cache.Stats()}
			},
		},
	})
	if err != nil {
		return err
	}
	if err := root.Resolve(setupCtx); err != nil {
		return mountResolveError(src, err)
	}
	server, err := root.Mount(mountpoint, regfs.MountConfig{AllowOther: f.AllowOther, AllowNonEmpty: f.NonEmpty, NoExec: f.NoExec, Debug: f.DebugFUSE})
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", what, mountpoint, err)
	}
	log.WithFields(logrus.Fields{"mounted": what, "mountpoint": mountpoint, "api": client.API()}).Info("mounted")
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
		ready = nil
	}
	notifyReady(mountpoint, what, log)
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
		notifyStopping(log)
		return
	case s := <-sigs:
		log.WithField("signal", s.String()).Info("unmounting")
		notifyStopping(log)
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
	if err := checkMountAnswers(mountpoint); err != nil {
		return fmt.Errorf("daemon reported ready, but %w", err)
	}
	return nil
}

// checkMountAnswers checks that mountpoint is a FUSE mount that answers: a
// statfs goes through the kernel to the server.
func checkMountAnswers(mountpoint string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(mountpoint, &st); err != nil {
		return fmt.Errorf("%s does not answer: %w", mountpoint, err)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE mount", mountpoint)
	}
	return nil
}

// notifyReady tells a service manager waiting on $NOTIFY_SOCKET that the
// mount is up, once it answers; a failure is logged, the mount stays.
func notifyReady(mountpoint, what string, log logrus.FieldLogger) {
	if os.Getenv(notifySocketEnv) == "" {
		return
	}
	if err := checkMountAnswers(mountpoint); err != nil {
		log.WithError(err).Error("not notifying the service manager: the mount does not answer")
		return
	}
	if err := notifyServiceManager("READY=1\nSTATUS=serving " + what + " on " + mountpoint); err != nil {
		log.WithError(err).Warn("service manager not notified")
	}
}

// notifyStopping tells a service manager the mount is going away.
func notifyStopping(log logrus.FieldLogger) {
	if err := notifyServiceManager("STOPPING=1"); err != nil {
		log.WithError(err).Warn("service manager not notified")
	}
}

const fuseSuperMagic = 0x65735546

// mountResolveError says in one line why src, a repository or image,
// cannot be mounted.
func mountResolveError(src registry.Reference, err error) error {
	kind := "image"
	if src.Tag == "" && src.Digest == "" {
		kind = "repository"
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("no %s %s, nothing mounted: %w", kind, src, err)
	case errors.Is(err, registry.ErrUnauthorized):
		return fmt.Errorf("%s %s: the registry refused access (credentials come from ~/.docker/config.json), nothing mounted: %w", kind, src, err)
	}
	return fmt.Errorf("%s %s, nothing mounted: %w", kind, src, err)
}

// parseMountSource reads the REGISTRY or REFERENCE argument of mount
// (registry.ParseRegistryOrReference). A malformed one is a usage error;
// a URL gets a hint of what to type instead.
func parseMountSource(arg string) (registry.Reference, error) {
	if i := strings.Index(arg, "://"); i >= 0 {
		rest := strings.TrimSuffix(arg[i+3:], "/")
		hint := ""
		if strings.HasPrefix(arg, "http://") {
			hint = " (add --plain-http for plain HTTP to a registry that is not on loopback)"
		}
		return registry.Reference{}, usageError{fmt.Errorf("REGISTRY %q: want host[:port] without a scheme: regfs mount %s MOUNTPOINT%s", arg, rest, hint)}
	}
	src, err := registry.ParseRegistryOrReference(arg)
	if err != nil {
		return registry.Reference{}, usageError{err}
	}
	return src, nil
}
