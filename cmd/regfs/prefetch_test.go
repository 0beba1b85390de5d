package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/registry/registrytest"
)

// fakeClock is a progress clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressBar(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	for _, tc := range []struct {
		name        string
		width       int
		total, done int64
		after       time.Duration
		want        string
	}{
		{"half way", 120, 100 << 20, 50 << 20, 5 * time.Second,
			"layer 1/2 [====================>                   ] 50.0 MiB / 100.0 MiB  10.0 MiB/s  ETA 5s"},
		{"done", 120, 10 << 20, 10 << 20, 2 * time.Second,
			"layer 1/2 [========================================] 10.0 MiB / 10.0 MiB  5.0 MiB/s  done"},
		{"nothing yet", 120, 10 << 20, 0, 0,
			"layer 1/2 [>                                       ] 0 B / 10.0 MiB  0 B/s  ETA --"},
		{"unknown total", 120, 0, 3 << 20, 3 * time.Second, "layer 1/2 3.0 MiB  1.0 MiB/s  ETA --"},
		{"80 columns", 80, 100 << 20, 25 << 20, 100 * time.Second,
			"layer 1/2 [=====>                ] 25.0 MiB / 100.0 MiB  256.0 KiB/s  ETA 5m00s"},
		{"no room for the bar", 60, 100 << 20, 25 << 20, time.Second,
			"layer 1/2 25.0 MiB / 100.0 MiB  25.0 MiB/s  ETA 3s"},
		{"no room for the label", 46, 100 << 20, 25 << 20, time.Second,
			"laye 25.0 MiB / 100.0 MiB  25.0 MiB/s  ETA 3s"},
		{"no room at all", 20, 100 << 20, 25 << 20, time.Second,
			"25.0 MiB / 100.0 Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &progress{w: io.Discard, mode: progressLines, width: tc.width, now: clock.now}
			p.Phase("layer 1/2", tc.total)
			p.Add(tc.done)
			clock.t = clock.t.Add(tc.after)
			if got := p.barLocked(clock.now()); got != tc.want {
				t.Errorf("bar:\ngot  %q\nwant %q", got, tc.want)
			}
			if got := len(p.barLocked(clock.now())); got > tc.width-1 {
				t.Errorf("bar is %d wide, want at most %d", got, tc.width-1)
			}
		})
	}
}

// The rate follows recent history, not the average since the start.
func TestProgressRateWindow(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	p := &progress{w: io.Discard, mode: progressLines, width: 80, now: clock.now}
	p.Phase("x", 1<<30)
	for i := 0; i < 100; i++ { // 10 s at 10 MiB/s, sampled every 100 ms
		p.Add(1 << 20)
		clock.t = clock.t.Add(100 * time.Millisecond)
		p.sampleLocked(clock.now())
	}
	for i := 0; i < 100; i++ { // then 10 s at 1 MiB/s
		p.Add(100 << 10)
		clock.t = clock.t.Add(100 * time.Millisecond)
		p.sampleLocked(clock.now())
	}
	if got := p.rateLocked(clock.now()) / (1 << 20); got < 0.9 || got > 1.1 {
		t.Errorf("rate after slowing down: got %.2f MiB/s, want about 1", got)
	}
}

func TestProgressModes(t *testing.T) {
	for _, tc := range []struct {
		mode progressMode
		want string
	}{
		{progressQuiet, ""},
		{progressLines, "layer 1 done\nall done\n"},
	} {
		var out bytes.Buffer
		p := newProgress(&out, tc.mode)
		p.Phase("pulling", 10)
		p.Add(10)
		p.Printf("layer %d done", 1)
		p.Printf("all done")
		p.Close()
		if out.String() != tc.want {
			t.Errorf("mode %d: got %q, want %q", tc.mode, out.String(), tc.want)
		}
	}
	if got := progressModeFor(&bytes.Buffer{}, false); got != progressLines {
		t.Errorf("mode for a buffer: got %d, want lines", got)
	}
	if got := progressModeFor(&bytes.Buffer{}, true); got != progressQuiet {
		t.Errorf("mode with --quiet: got %d, want quiet", got)
	}
}

// In bar mode a printed line replaces the bar, which is then redrawn.
func TestProgressBarPrintf(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{time.Unix(1000, 0)}
	p := &progress{w: &out, mode: progressBar, width: 80, now: clock.now, stop: make(chan struct{}), stopped: make(chan struct{})}
	close(p.stopped) // no ticker: draws happen on Printf only
	p.Phase("pulling", 4)
	p.Add(2)
	p.Printf("a line")
	p.Printf("another")
	p.Close()
	want := "a line\n\r" + p.barLocked(clock.now()) + "\x1b[K" + "\r\x1b[K" + "another\n\r" + p.barLocked(clock.now()) + "\x1b[K" + "\r\x1b[K"
	if out.String() != want {
		t.Errorf("bar output:\ngot  %q\nwant %q", out.String(), want)
	}
}

func TestShortDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{300 * time.Microsecond, "<1ms"},
		{850 * time.Millisecond, "850ms"},
		{1300 * time.Millisecond, "1.3s"},
		{42 * time.Second, "42s"},
		{185 * time.Second, "3m05s"},
		{62 * time.Minute, "1h02m"},
	} {
		if got := shortDuration(tc.d); got != tc.want {
			t.Errorf("shortDuration(%v): got %q, want %q", tc.d, got, tc.want)
		}
	}
}

// Errors found before any network use, through the command line.
func TestPrefetchCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prefetch"}, "requires at least 1 arg"},
		{[]string{"prefetch", "--cache-dir", "", "127.0.0.1:1/a:b"}, "--cache-dir"},
		{[]string{"prefetch", "--cache-dir", t.TempDir(), "127.0.0.1:1/A:b"}, "must be lower case"},
		{[]string{"prefetch", "--cache-dir", t.TempDir(), "127.0.0.1:1/a:b", "--platform", "linux"}, "--platform"},
		{[]string{"prefetch", "--cache-dir", t.TempDir(), "127.0.0.1:1/a:b", "--log-level", "loud"}, "--log-level"},
	} {
		root := newRootCommand()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(tc.args)
		err := root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("regfs %v: got %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// The whole command in this process, so -race sees its goroutines (the
// pulls, the index passes, the file readers and the progress output).
func TestRunPrefetchInProcess(t *testing.T) {
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	for _, tc := range []struct {
		ref   string
		paths []string
		want  []string // lines starting so, in any order
	}{
		{"test/small:latest", nil, []string{"layer 1/3 sha256:", "layer 2/3 sha256:", "layer 3/3 sha256:", "prefetched " + reg.Host + "/test/small:latest: 3 layers"}},
		{"test/compress:estargz", []string{"/etc", "/usr/share/doc/big.txt"}, []string{"3 layers indexed; 4 files", "prefetched "}},
		{"test/multi:latest", []string{"/"}, []string{"1 layer indexed;", "prefetched " + reg.Host + "/test/multi:latest (linux/amd64)"}},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			f := prefetchFlags{partsFlags: partsFlags{
				API: "v2", Platform: "linux/amd64", CacheSize: defaultCacheSize, BlockSize: 16 << 10,
				CacheDir: t.TempDir(), DiskCacheSize: defaultDiskCacheSize, Spacing: defaultSpacing, Parallel: 4, LogLevel: "warn", LogFormat: "text",
			}}
			var out bytes.Buffer
			if err := runPrefetch(context.Background(), f, reg.Host+"/"+tc.ref, tc.paths, &out); err != nil {
				t.Fatalf("prefetch %s %v: %v; output:\n%s", tc.ref, tc.paths, err, out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || strings.HasPrefix(l, w)
				}
				if !found {
					t.Errorf("prefetch %s %v: got output\n%s\nwant a line starting %q", tc.ref, tc.paths, out.String(), w)
				}
			}
		})
	}
}

// A registry that serves other bytes for a layer digest fails the prefetch:
// the cache's hash of the in-order pass is the check, and nothing of the
// blob is left under its digest.
func TestRunPrefetchRefusesWrongBytes(t *testing.T) {
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	fx := registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	var targets []digest.Digest
	for _, l := range fx.Small.Layers {
		targets = append(targets, l.Digest)
	}
	evil := registrytest.StartEvilRegistry(t, reg, registrytest.LieWrongBytes, targets...)
	f := prefetchFlags{partsFlags: partsFlags{
		API: "v2", Platform: "linux/amd64", CacheSize: defaultCacheSize, BlockSize: 16 << 10,
		CacheDir: t.TempDir(), DiskCacheSize: defaultDiskCacheSize, Spacing: defaultSpacing, Parallel: 4, LogLevel: "error", LogFormat: "text",
	}}
	var out bytes.Buffer
	err := runPrefetch(context.Background(), f, evil.Host+"/test/small@"+fx.Small.Digest.String(), nil, &out)
	if !errors.Is(err, layercache.ErrDigestMismatch) {
		t.Fatalf("prefetch from a registry serving wrong layer bytes: got %v, want a digest mismatch", err)
	}
}
