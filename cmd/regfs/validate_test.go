package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// Every flag of every command, refused out of range with a message naming
// the range, and accepted as people write it. A mount whose flags pass
// goes on to check its mountpoint, which here does not exist: that error
// shows the flags were accepted.
func TestFlagRanges(t *testing.T) {
	noMnt := t.TempDir() + "/missing"
	mount := func(flags ...string) []string {
		return append(append([]string{"mount"}, flags...), "127.0.0.1:1", noMnt)
	}
	prefetch := func(flags ...string) []string {
		return append(append([]string{"prefetch", "--cache-dir", t.TempDir()}, flags...), "127.0.0.1:1/a:b")
	}
	const accepted = "missing" // the mountpoint error
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{mount("--block-size", "3"), "--block-size 3: want 4K to 64M"},
		{mount("--block-size", "128M"), "--block-size 128M: want 4K to 64M"},
		{mount("--block-size", "0"), "--block-size 0: want 4K to 64M"},
		{mount("--block-size", "4K"), accepted},
		{mount("--block-size", "64MiB"), accepted},
		{mount("--cache-size", "1.5G"), accepted},
		{mount("--cache-size", "1.5 GB"), accepted},
		{mount("--cache-size", "2M"), "--cache-size 2M: want at least 4 blocks of --block-size 1M: 4M"},
		{mount("--cache-size", "lots"), `size "lots": want a number of bytes, optionally with a unit`},
		{mount("--cache-size", "-1G"), `size "-1G"`},
		{mount("--cache-size", "1e30"), `size "1e30"`},
		{mount("--cache-size", "99999999T"), `size "99999999T"`},
		{mount("--disk-cache-size", "1K"), "--disk-cache-size 1K: want at least 4 blocks of --block-size 1M"},
		{mount("--disk-cache-size", "1K", "--cache-dir", ""), accepted}, // no disk cache: no bound to check
		{mount("--parallel-fetches", "0"), "--parallel-fetches 0: want at least 1 and at most 64"},
		{mount("--parallel-fetches", "65"), "at most 64"},
		{mount("--checkpoint-spacing", "4K"), "--checkpoint-spacing 4K: want at least 128.0 KiB and at most 1.0 GiB"},
		{mount("--checkpoint-spacing", "2G"), "at most 1.0 GiB"},
		{mount("--api", "v3"), `--api "v3": want auto, v2 or v1`},
		{mount("--platform", "linux/ amd64"), `component " amd64" may hold only letters, digits`},
		{mount("--platform", "linux"), "want os/arch[/variant]"},
		{mount("--platform", "linux/arm64/v8"), accepted},
		{mount("--log-level", "loud"), `--log-level "loud": want debug, info, warn or error`},
		{mount("--log-format", "xml"), `--log-format "xml": want text or json`},
		{mount("--tag-ttl", "-1s"), "--tag-ttl -1s: want more than 0 and at most 24h"},
		{mount("--tag-ttl", "0"), "--tag-ttl 0s: want more than 0"},
		{mount("--tag-ttl", "48h"), "--tag-ttl 48h: want more than 0 and at most 24h"},
		{mount("--tag-ttl", "soon"), `duration "soon": want a number with a unit`},
		{mount("--tag-ttl", "1m30s"), accepted},
		{mount("--timeout", "0s"), "--timeout 0s: want 1s to 24h"},
		{mount("--timeout", "500ms"), "--timeout 500ms: want 1s to 24h"},
		{mount("--timeout", "10m"), accepted},
		{prefetch("--block-size", "3"), "--block-size 3: want 4K to 64M"},
		{prefetch("--tag-ttl", "1s"), "unknown flag: --tag-ttl"},
		{prefetch("--parallel-fetches", "0"), "--parallel-fetches 0: want at least 1"},
		{prefetch("--platform", "linux/ amd64"), "may hold only letters"},
		{[]string{"cache", "du", "--cache-dir", t.TempDir(), "--disk-cache-size", "1.5x"}, `size "1.5x"`},
		{[]string{"cache", "ls", "--cache-dir", t.TempDir(), "--sort", "age"}, "--sort"},
	} {
		root := newRootCommand()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(tc.args)
		err := root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("regfs %q: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: refused
		show string
	}{
		{"4096", 4096, "4K"},
		{"3", 3, "3"},
		{"512K", 512 << 10, "512K"},
		{"512k", 512 << 10, "512K"},
		{"64MiB", 64 << 20, "64M"},
		{"64MB", 64 << 20, "64M"},
		{"1.5G", 3 << 29, "1.5G"},
		{"1.5 GiB", 3 << 29, "1.5G"},
		{"2T", 2 << 40, "2T"},
		{"1000", 1000, "1000"},
		{"1025K", 1025 << 10, "1025K"},
		{"", -1, ""},
		{"G", -1, ""},
		{"-1", -1, ""},
		{"1.5X", -1, ""},
		{"1e9", -1, ""},
		{"2000P", -1, ""},
	} {
		got, err := parseSize(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("parseSize(%q): got %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q): got %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if s := formatSize(got); s != tc.show {
			t.Errorf("formatSize(%d): got %q, want %q", got, s, tc.show)
		}
	}
}

// .regfs/config shows sizes and durations as they are written on the
// command line, not as byte and nanosecond counts.
func TestConfigJSONUnits(t *testing.T) {
	f := mountFlags{
		partsFlags: partsFlags{CacheSize: 3 << 29, BlockSize: 64 << 10, DiskCacheSize: 10 << 30, Spacing: 2 << 20},
		TagTTL:     duration(30 * time.Second), Timeout: duration(90 * time.Minute),
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cache_size":"1.5G"`, `"block_size":"64K"`, `"disk_cache_size":"10G"`, `"checkpoint_spacing":"2M"`, `"tag_ttl":"30s"`, `"timeout":"1h30m"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config JSON %s: want %s", b, want)
		}
	}
}

// A disk cache filled with one block size is refused to another, with both
// sizes and the ways out named, instead of being ignored.
func TestBlockSizeStampRefusal(t *testing.T) {
	reg := registrytest.StartRegistry(t, registrytest.WithInMemoryStorage())
	registrytest.PushFixtures(t, reg, registrytest.WithoutLarge())
	dir := t.TempDir()
	ref := reg.Host + "/test/small:latest"
	if _, _, err := runCLI(t, "prefetch", "-q", "--cache-dir", dir, "--block-size", "64K", ref); err != nil {
		t.Fatalf("prefetch with 64K blocks: %v", err)
	}
	_, _, err := runCLI(t, "prefetch", "-q", "--cache-dir", dir, "--block-size", "1M", ref)
	for _, want := range []string{"--block-size 1M", "holds 64K blocks", "pass --block-size 64K", "regfs cache clear --cache-dir " + dir} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("prefetch with 1M blocks into a 64K cache: got %v, want an error with %q", err, want)
		}
	}
	if _, _, err := runCLI(t, "prefetch", "-q", "--cache-dir", dir, "--block-size", "64K", ref); err != nil {
		t.Errorf("prefetch again with 64K blocks: %v", err)
	}
	if _, _, err := runCLI(t, "cache", "clear", "--cache-dir", dir); err != nil {
		t.Fatalf("cache clear: %v", err)
	}
	if _, _, err := runCLI(t, "prefetch", "-q", "--cache-dir", dir, "--block-size", "1M", ref); err != nil {
		t.Errorf("prefetch with 1M blocks after cache clear: %v", err)
	}
}
