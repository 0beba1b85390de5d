package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	units "github.com/docker/go-units"
	"github.com/moby/sys/mountinfo"
)

// mount is one regfs process serving one mountpoint.
type mount struct {
	dir       string // mountpoint
	cacheDir  string
	phase     string // what it was mounted for, named in the RSS row
	logPath   string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	waitErr   error
	peakRSS   int64 // VmHWM in bytes, read just before unmounting
	cacheSize int64 // --cache-size in bytes, from .regfs/config
	once      sync.Once
}

// mounter starts regfs processes and remembers them, so that every one is
// unmounted whatever happens.
type mounter struct {
	bin, host, work string
	args            []string // extra flags for every mount (--cache-size …)
	broken          error    // why no mount can be made (regfs did not build)

	mu     sync.Mutex
	n      int
	mounts []*mount
	rss    []*mount // unmounted ones, for the RSS row
}

// mount starts regfs on a new mountpoint with cacheDir ("" for none) and
// returns once the mount answers.
func (mr *mounter) mount(ctx context.Context, phase, cacheDir string) (*mount, error) {
	if mr.broken != nil {
		return nil, mr.broken
	}
	mr.mu.Lock()
	mr.n++
	n := mr.n
	mr.mu.Unlock()
	m := &mount{
		dir:      filepath.Join(mr.work, fmt.Sprintf("mnt%02d", n)),
		cacheDir: cacheDir,
		phase:    phase,
		logPath:  filepath.Join(mr.work, fmt.Sprintf("regfs%02d.log", n)),
		done:     make(chan struct{}),
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, err
	}
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"mount", "--cache-dir", cacheDir, "--log-level", "warn"}, mr.args...)
	args = append(args, mr.host, m.dir)
	m.cmd = exec.Command(mr.bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start regfs: %w", err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	mr.mu.Lock()
	mr.mounts = append(mr.mounts, m)
	mr.mu.Unlock()
	// For scripts/bench.sh, in case this process is killed too hard to
	// clean up: it ends these by id.
	if f, err := os.OpenFile(filepath.Join(mr.work, "pids"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintln(f, m.cmd.Process.Pid)
		f.Close()
	}

	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(m.dir) {
		select {
		case <-m.done:
			return nil, fmt.Errorf("regfs exited before mounting (%v): %s", m.waitErr, m.logTail())
		case <-ctx.Done():
			mr.unmount(m)
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			mr.unmount(m)
			return nil, fmt.Errorf("regfs did not mount within 30s: %s", m.logTail())
		}
	}
	// The memory bound regfs applies, as it reports it (the RSS row
	// compares against it).
	var cfg struct {
		CacheSize string `json:"cache_size"` // as --cache-size is written: "128M"
	}
	if raw, err := os.ReadFile(filepath.Join(m.dir, ".regfs", "config")); err == nil && json.Unmarshal(raw, &cfg) == nil {
		if n, err := units.RAMInBytes(cfg.CacheSize); err == nil {
			m.cacheSize = n
		}
	}
	return m, nil
}

// unmount ends m: fusermount3 -u; if the mount is busy (a reader that gave
// up is still blocked in it), a lazy umount and SIGTERM; SIGKILL last. It
// records the process's peak RSS first. Safe to call twice.
func (mr *mounter) unmount(m *mount) error {
	var err error
	m.once.Do(func() {
		m.peakRSS = readHWM(m.cmd.Process.Pid)
		grace := 10 * time.Second
		if isMounted(m.dir) {
			if out, e := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); e != nil {
				err = fmt.Errorf("fusermount3 -u %s: %v: %s", m.dir, e, bytes.TrimSpace(out))
				_ = exec.Command("umount", "-l", m.dir).Run()
				_ = m.cmd.Process.Signal(syscall.SIGTERM)
				grace = 3 * time.Second
			}
		}
		select {
		case <-m.done:
		case <-time.After(grace):
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(3 * time.Second):
				_ = exec.Command("umount", "-l", m.dir).Run()
				_ = m.cmd.Process.Kill()
				<-m.done
			}
			err = errors.Join(err, fmt.Errorf("regfs on %s did not exit after unmount", m.dir))
		}
		if m.waitErr != nil && err == nil {
			err = fmt.Errorf("regfs on %s exited: %v: %s", m.dir, m.waitErr, m.logTail())
		}
		if isMounted(m.dir) {
			_ = exec.Command("umount", "-l", m.dir).Run()
		}
		mr.mu.Lock()
		mr.rss = append(mr.rss, m)
		mr.mu.Unlock()
	})
	return err
}

// unmountAll ends every mount still up.
func (mr *mounter) unmountAll() {
	mr.mu.Lock()
	ms := append([]*mount(nil), mr.mounts...)
	mr.mu.Unlock()
	for _, m := range ms {
		if err := mr.unmount(m); err != nil {
			logf("cleanup: %v", err)
		}
	}
}

// peak is the mount with the highest peak RSS among those unmounted.
func (mr *mounter) peak() *mount {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	var best *mount
	for _, m := range mr.rss {
		if best == nil || m.peakRSS > best.peakRSS {
			best = m
		}
	}
	return best
}

// logTail is the last lines of regfs's log, for error messages.
func (m *mount) logTail() string {
	b, _ := os.ReadFile(m.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// isMounted reports whether dir is a mount point, from the mount table
// alone: asking the mount itself could hang on a regfs that stopped
// answering.
func isMounted(dir string) bool {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	return err == nil && len(ms) > 0
}

// readHWM is a process's peak resident set size (VmHWM) in bytes, 0 if
// unknown.
func readHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// explainMissing turns a failed stat of path inside a mount into an error
// naming the deepest part that exists and what it holds, so an n/a row says
// which part of the tree this regfs build lacks.
func explainMissing(path string, err error) error {
	dir := path
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return err
		}
		dir = parent
		var ents []os.DirEntry
		rerr := bounded("readdir", 30*time.Second, func() error {
			var err error
			ents, err = os.ReadDir(dir)
			return err
		})
		if rerr == nil {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if len(names) > 8 {
				names = append(names[:8], "…")
			}
			return fmt.Errorf("%w (%s holds: %s)", err, filepath.Base(dir), strings.Join(names, " "))
		}
	}
}
