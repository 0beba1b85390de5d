package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/registry/registrytest"
)

// opTimeout bounds any one measured operation, so a hung mount turns a row
// into "n/a (timeout)" instead of hanging the run.
const opTimeout = 10 * time.Minute

// timeCmd runs name args with stdout to out (nil: /dev/null) and returns
// how long it took.
func timeCmd(ctx context.Context, out io.Writer, name string, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if out == nil {
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return 0, err
		}
		defer devnull.Close()
		cmd.Stdout = devnull
	} else {
		cmd.Stdout = out
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if ctx.Err() == context.DeadlineExceeded {
		return d, fmt.Errorf("timeout after %v: %s %s", opTimeout, name, strings.Join(args, " "))
	}
	if err != nil {
		return d, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, firstLine(stderr.String()))
	}
	return d, nil
}

// timeShell runs a bash pipeline (with pipefail) and returns its duration.
func timeShell(ctx context.Context, script string) (time.Duration, error) {
	return timeCmd(ctx, nil, "bash", "-c", "set -o pipefail; "+script)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// httpGet downloads url to nowhere with net/http and returns the duration
// and the byte count.
func httpGet(ctx context.Context, url string) (time.Duration, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return time.Since(start), n, err
}

// pullAndWalk is the `crane export`-style baseline: GET the manifest, then
// each layer blob in order, decompressed (compress/gzip, as crane does) and
// walked as tar, reading every file's content. It returns the duration and
// the number of regular files seen.
func pullAndWalk(ctx context.Context, registryURL, repo, tag string) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("manifest %s:%s: %s %v", repo, tag, resp.Status, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, 0, fmt.Errorf("manifest %s:%s: %w", repo, tag, err)
	}
	files := 0
	for _, l := range m.Layers {
		n, err := walkBlob(ctx, registryURL+"/v2/"+repo+"/blobs/"+l.Digest.String())
		if err != nil {
			return 0, 0, err
		}
		files += n
	}
	return time.Since(start), files, nil
}

func walkBlob(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	tr := tar.NewReader(zr)
	files := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("%s: %w", url, err)
		}
		if h.Typeflag == tar.TypeReg {
			files++
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return files, fmt.Errorf("%s: %w", url, err)
			}
		}
	}
}

// extractLocal writes img's merged tree under dir (regular files,
// directories, symlinks, hardlinks; no whiteouts in these images): the
// local copy that the ls -R and parallel-reader rows compare against.
func extractLocal(img *registrytest.Image, dir string) error {
	for _, l := range img.Layers {
		rc, err := l.OpenBlob()
		if err != nil {
			return err
		}
		err = extractTar(rc, dir)
		rc.Close()
		if err != nil {
			return fmt.Errorf("extract layer %s: %w", l.Digest, err)
		}
	}
	return nil
}

func extractTar(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			continue
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			var f *os.File
			if f, err = os.Create(p); err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		case tar.TypeSymlink:
			os.Remove(p)
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			os.Remove(p)
			err = os.Link(filepath.Join(dir, filepath.Clean(h.Linkname)), p)
		}
		if err != nil {
			return err
		}
	}
}

// readResult is what parallel readers measured.
type readResult struct {
	reads int
	bytes int64
	wall  time.Duration
	p50   time.Duration
	p99   time.Duration
	// fetched is what the registry served meanwhile (set by the caller).
	fetched int64
}

func (r readResult) mibps() float64 { return float64(r.bytes) / (1 << 20) / r.wall.Seconds() }

// parallelRead has `readers` goroutines read `total` whole files picked at
// random (fixed seed: the same picks for regfs and the baseline) from
// files under root, and returns throughput and latency percentiles.
func parallelRead(ctx context.Context, root string, files []fileInfo, readers, total int, seed uint64) (readResult, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 0x72656766))
	picks := make([]fileInfo, total)
	for i := range picks {
		picks[i] = files[rng.IntN(len(files))]
	}
	jobs := make(chan fileInfo)
	lat := make([]time.Duration, 0, total)
	var (
		mu       sync.Mutex
		firstErr error
		nbytes   int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < readers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for f := range jobs {
				t0 := time.Now()
				n, err := readAll(filepath.Join(root, f.path), buf)
				d := time.Since(t0)
				mu.Lock()
				if err == nil && n != f.size {
					err = fmt.Errorf("%s: read %d bytes, want %d", f.path, n, f.size)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, d)
				nbytes += n
				mu.Unlock()
			}
		}()
	}
feed:
	for _, f := range picks {
		select {
		case jobs <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-ctx.Done():
		// Readers stuck in the kernel end when the mount is torn down.
		return readResult{}, fmt.Errorf("parallel readers: not done within %v", opTimeout)
	}
	wall := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("parallel readers: not done within %v", opTimeout)
	}
	if firstErr != nil {
		return readResult{}, firstErr
	}
	slices.Sort(lat)
	return readResult{reads: len(lat), bytes: nbytes, wall: wall, p50: percentile(lat, 0.50), p99: percentile(lat, 0.99)}, nil
}

func readAll(path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// median of durations.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// counters reads the registry's counters once they have stopped moving
// (readahead and background index passes a read started are its cost).
func counters(reg *registrytest.Registry) registrytest.Stats {
	st := reg.Stats()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(150 * time.Millisecond)
		next := reg.Stats()
		if next.BytesServed == st.BytesServed && next.Requests == st.Requests {
			return next
		}
		st = next
	}
	return st
}

// fuseTimeout bounds one call into a mount made from this process (stat,
// readdir), so a hung mount turns a row into n/a instead of hanging the
// run. regfs's own bound on one operation is a minute by default.
const fuseTimeout = 3 * time.Minute

// bounded runs fn, giving up after d. A call that gives up leaves its
// goroutine blocked in the kernel until the mount is torn down, which the
// caller's unmount does.
func bounded(what string, d time.Duration, fn func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		return fmt.Errorf("%s: no answer within %v", what, d)
	}
}

// statMount is os.Stat bounded by fuseTimeout.
func statMount(path string) (os.FileInfo, error) {
	var fi os.FileInfo
	err := bounded("stat "+path, fuseTimeout, func() error {
		var err error
		fi, err = os.Stat(path)
		return err
	})
	return fi, err
}
