package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/registry/registrytest"
)

type config struct {
	work      string
	regfsBin  string
	largeMB   int64
	files     int
	reps      int
	readers   int
	reads     int
	cacheSize string
	blockSize string
	quick     bool
	keep      bool
	out       string
	trace     bool
	repos     int
	tags      int
	listings  bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.work, "work", "", "working directory (mounts, caches, registry storage); default a new temporary one, removed at the end")
	flag.StringVar(&cfg.regfsBin, "regfs", "", "regfs binary to measure (default: go build ./cmd/regfs into the working directory)")
	flag.Int64Var(&cfg.largeMB, "large-mb", 256, "content size of the large layer in MiB (its gzip blob is about 70 % of it)")
	flag.IntVar(&cfg.files, "files", 20000, "small files in the many-file image")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each timed row (the median is shown)")
	flag.IntVar(&cfg.readers, "readers", 64, "parallel readers")
	flag.IntVar(&cfg.reads, "reads", 4096, "files read in total by the parallel readers")
	flag.StringVar(&cfg.cacheSize, "cache-size", "128MiB", "regfs --cache-size for every mount (the RSS row compares against it)")
	flag.StringVar(&cfg.blockSize, "block-size", "", "regfs --block-size for every mount (default: regfs's own)")
	flag.BoolVar(&cfg.quick, "quick", false, "small images and one repetition: under a minute")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the working directory (regfs logs) at the end")
	flag.StringVar(&cfg.out, "o", "", "also write the table to this file")
	flag.BoolVar(&cfg.trace, "trace", false, "log the registry requests each first-read row made (stderr)")
	flag.IntVar(&cfg.repos, "repos", 10000, "repositories in the listing rows' catalog")
	flag.IntVar(&cfg.tags, "tags", 5000, "tags of the listing rows' repository")
	flag.BoolVar(&cfg.listings, "listings-only", false, "only the listing rows (no images built)")
	flag.Parse()
	if cfg.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["large-mb"] {
			cfg.largeMB = 16
		}
		if !set["files"] {
			cfg.files = 2000
		}
		if !set["reps"] {
			cfg.reps = 1
		}
		if !set["reads"] {
			cfg.reads = 1024
		}
		if !set["repos"] {
			cfg.repos = 2000
		}
		if !set["tags"] {
			cfg.tags = 1000
		}
	}
	if cfg.reps < 1 || cfg.largeMB < 1 || cfg.files < 100 || cfg.readers < 1 || cfg.reads < 1 || cfg.repos < 1 || cfg.tags < 1 {
		fmt.Fprintln(os.Stderr, "bench: -reps, -large-mb, -readers, -reads, -repos, -tags must be positive and -files at least 100")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var started = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %6.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
}

type bench struct {
	cfg config
	reg *registrytest.Registry
	set *imageSet
	mr  *mounter
	n   int // cache directories made

	rows  []row
	local string // the gzip image extracted on local disk
}

// row is one line of the table.
type row struct {
	name, regfs, baseline, ratio, fetched, target string
}

func naRow(name, target string, err error) row {
	return row{name: name, regfs: "n/a (" + oneLine(err.Error()) + ")", baseline: "", ratio: "n/a", fetched: "", target: target}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func run(cfg config) (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.work == "" {
		cfg.work, err = os.MkdirTemp("", "regfs-bench-")
		if err != nil {
			return err
		}
		if !cfg.keep {
			defer os.RemoveAll(cfg.work)
		}
	} else if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return err
	}
	cfg.work, _ = filepath.Abs(cfg.work)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found: run scripts/setup.sh first")
	}
	for _, tool := range []string{"curl", "gzip", "cat", "ls", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: the baselines need it", tool)
		}
	}
	// A regfs that does not build still gets a table: every row that needs
	// a mount says why it is n/a.
	var buildErr error
	if cfg.regfsBin == "" {
		cfg.regfsBin = filepath.Join(cfg.work, "regfs")
		logf("building regfs")
		if out, err := exec.Command("go", "build", "-o", cfg.regfsBin, "./cmd/regfs").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("regfs does not build: %s", firstError(string(out)))
			logf("%v\n%s", buildErr, out)
		}
	} else if _, err := os.Stat(cfg.regfsBin); err != nil {
		buildErr = fmt.Errorf("no regfs binary: %w", err)
	}

	b := &bench{cfg: cfg}
	if cfg.listings {
		b.mr = &mounter{bin: cfg.regfsBin, work: cfg.work, args: []string{"--cache-size", cfg.cacheSize}, broken: buildErr}
		b.listingRows(ctx)
		fmt.Print(b.table())
		return nil
	}
	b.set, err = buildImages(cfg)
	if err != nil {
		return err
	}
	b.reg, err = registrytest.Start(ctx, registrytest.Config{Dir: filepath.Join(cfg.work, "registry")})
	if err != nil {
		return err
	}
	defer b.reg.Close()
	logf("registry on %s; pushing", b.reg.URL)
	if err := push(ctx, b.reg, b.set); err != nil {
		return err
	}
	extra := []string{"--cache-size", cfg.cacheSize}
	if cfg.blockSize != "" {
		extra = append(extra, "--block-size", cfg.blockSize)
	}
	b.mr = &mounter{bin: cfg.regfsBin, host: b.reg.Host, work: cfg.work, args: extra, broken: buildErr}
	defer b.mr.unmountAll()

	// A signal ends the run, but never leaves a mount or a regfs behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		logf("%v: unmounting and exiting", s)
		cancel()
		b.mr.unmountAll()
		b.reg.Close()
		if !cfg.keep {
			os.RemoveAll(cfg.work)
		}
		os.Exit(130)
	}()

	b.blobRows(ctx)
	b.layerTarRows(ctx)
	b.rootfsRows(ctx)
	b.listingRows(ctx)
	b.mr.unmountAll()
	b.rssRow()

	table := b.table()
	fmt.Print(table)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(table), 0o644); err != nil {
			return err
		}
	}
	if cfg.keep {
		logf("kept %s", cfg.work)
	}
	return nil
}

// cacheDir is a new, empty cache directory.
func (b *bench) cacheDir(what string) string {
	b.n++
	return filepath.Join(b.cfg.work, fmt.Sprintf("cache%02d-%s", b.n, what))
}

func (b *bench) blobURL(d digest.Digest) string {
	return b.reg.URL + "/v2/" + benchRepo + "/blobs/" + d.String()
}

// imagePath is a path inside the image directory of tag on mount m.
func imagePath(m *mount, tag string, rest ...string) string {
	return filepath.Join(append([]string{m.dir, benchRepo + ":" + tag}, rest...)...)
}

// blobRows: cold and warm sequential reads of the large blob.
func (b *bench) blobRows(ctx context.Context) {
	layer := b.set.large.Layers[0]
	id := chainIDs(b.set.large)[0]
	size := layer.Size
	url := b.blobURL(layer.Digest)
	names := struct{ curl, goGet, warm, disk string }{
		fmt.Sprintf("cold sequential read of `blob` (%s gzip) vs `curl`", fmtBytes(size)),
		"cold sequential read of `blob` vs Go net/http GET",
		"warm re-read of `blob` (same mount) vs `cat` of a local copy",
		"re-read of `blob` on a fresh mount, same --cache-dir (disk tier) vs `cat` of a local copy",
	}
	logf("blob rows: %s, %d repetitions", fmtBytes(size), b.cfg.reps)
	var curlT, goT, coldT, warmT, diskT, localT []time.Duration
	var coldF, warmF, diskF int64
	fail := func(err error) {
		b.rows = append(b.rows, naRow(names.curl, "≥ 0.9", err), naRow(names.goGet, "", err),
			naRow(names.warm, "≥ 0.5", err), naRow(names.disk, "", err))
	}
	// The local copy is read once first, so the baseline is page-cache warm.
	if _, err := timeCmd(ctx, nil, "cat", layer.BlobPath); err != nil {
		fail(err)
		return
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		d, err := timeCmd(ctx, nil, "curl", "-sSf", "-o", "/dev/null", url)
		if err != nil {
			fail(err)
			return
		}
		curlT = append(curlT, d)
		d, n, err := httpGet(ctx, url)
		if err == nil && n != size {
			err = fmt.Errorf("GET returned %d bytes, want %d", n, size)
		}
		if err != nil {
			fail(err)
			return
		}
		goT = append(goT, d)

		cache := b.cacheDir("blob")
		m, err := b.mr.mount(ctx, "blob cold+warm read", cache)
		if err != nil {
			fail(err)
			return
		}
		path := imagePath(m, tagLarge, "layers", id, "blob")
		// Resolve the tag and manifest first: the row is about data.
		if fi, err := statMount(path); err != nil || fi.Size() != size {
			if err == nil {
				err = fmt.Errorf("stat %s: size %d, want %d", path, fi.Size(), size)
			} else {
				err = explainMissing(path, err)
			}
			b.mr.unmount(m)
			fail(err)
			return
		}
		before := counters(b.reg)
		d, err = timeCmd(ctx, nil, "cat", path)
		if err != nil {
			b.mr.unmount(m)
			fail(err)
			return
		}
		after := counters(b.reg)
		coldT, coldF = append(coldT, d), coldF+after.BlobBytesServed-before.BlobBytesServed
		d, err = timeCmd(ctx, nil, "cat", path)
		if err != nil {
			b.mr.unmount(m)
			fail(err)
			return
		}
		again := counters(b.reg)
		warmT, warmF = append(warmT, d), warmF+again.BlobBytesServed-after.BlobBytesServed
		d, err = timeCmd(ctx, nil, "cat", layer.BlobPath)
		if err != nil {
			b.mr.unmount(m)
			fail(err)
			return
		}
		localT = append(localT, d)
		if rep == 0 {
			if err := bounded("read "+path, opTimeout, func() error { return verifyDigest(path, layer.Digest) }); err != nil {
				b.mr.unmount(m)
				fail(err)
				return
			}
		}
		if err := b.mr.unmount(m); err != nil {
			logf("warning: %v", err)
		}

		m, err = b.mr.mount(ctx, "blob re-read, disk tier", cache)
		if err != nil {
			fail(err)
			return
		}
		path = imagePath(m, tagLarge, "layers", id, "blob")
		if _, err := statMount(path); err != nil {
			err = explainMissing(path, err)
			b.mr.unmount(m)
			fail(err)
			return
		}
		before = counters(b.reg)
		d, err = timeCmd(ctx, nil, "cat", path)
		if err != nil {
			b.mr.unmount(m)
			fail(err)
			return
		}
		after = counters(b.reg)
		diskT, diskF = append(diskT, d), diskF+after.BlobBytesServed-before.BlobBytesServed
		if err := b.mr.unmount(m); err != nil {
			logf("warning: %v", err)
		}
	}
	reps := int64(b.cfg.reps)
	perByte := func(f int64) string {
		return fmt.Sprintf("%.3f B/B (%s)", float64(f)/float64(size*reps), fmtBytes(f/reps))
	}
	b.rows = append(b.rows,
		speedRow(names.curl, size, median(coldT), "curl", median(curlT), perByte(coldF), "≥ 0.9"),
		speedRow(names.goGet, size, median(coldT), "net/http", median(goT), perByte(coldF), ""),
		speedRow(names.warm, size, median(warmT), "cat", median(localT), perByte(warmF), "≥ 0.5"),
		speedRow(names.disk, size, median(diskT), "cat", median(localT), perByte(diskF), ""),
	)
}

// verifyDigest reads path whole and checks its sha256.
func verifyDigest(path string, want digest.Digest) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != want {
		return fmt.Errorf("WRONG BYTES: %s hashes to %s, want %s", path, got, want)
	}
	return nil
}

// speedRow compares two timings of the same amount of data: the ratio is
// regfs's throughput over the baseline's (1.0 = as fast).
func speedRow(name string, size int64, regfs time.Duration, baseName string, base time.Duration, fetched, target string) row {
	return row{
		name:     name,
		regfs:    fmt.Sprintf("%s (%s)", fmtRate(size, regfs), fmtDur(regfs)),
		baseline: fmt.Sprintf("%s %s (%s)", baseName, fmtRate(size, base), fmtDur(base)),
		ratio:    fmt.Sprintf("**%.2f×**", base.Seconds()/regfs.Seconds()),
		fetched:  fetched,
		target:   target,
	}
}

// layerTarRows: streaming the uncompressed layer.
func (b *bench) layerTarRows(ctx context.Context) {
	layer := b.set.large.Layers[0]
	id := chainIDs(b.set.large)[0]
	url := b.blobURL(layer.Digest)
	name := fmt.Sprintf("`cat layer.tar` (%s tar), cold vs `curl | gzip -dc`", fmtBytes(layer.UncompressedSize))
	logf("layer.tar rows")
	var regT, baseT []time.Duration
	var fetched int64
	for rep := 0; rep < b.cfg.reps; rep++ {
		d, err := timeShell(ctx, fmt.Sprintf("curl -sSf %q | gzip -dc > /dev/null", url))
		if err != nil {
			b.rows = append(b.rows, naRow(name, "≥ 0.9", err))
			return
		}
		baseT = append(baseT, d)
		m, err := b.mr.mount(ctx, "layer.tar cold", b.cacheDir("tar"))
		if err != nil {
			b.rows = append(b.rows, naRow(name, "≥ 0.9", err))
			return
		}
		dir := imagePath(m, tagLarge, "layers", id)
		if _, err := statMount(dir); err != nil {
			b.mr.unmount(m)
			b.rows = append(b.rows, naRow(name, "≥ 0.9", err))
			return
		}
		before := counters(b.reg)
		d, err = timeCmd(ctx, nil, "cat", filepath.Join(dir, "layer.tar"))
		if err == nil {
			if fi, serr := statMount(filepath.Join(dir, "layer.tar")); serr != nil {
				err = serr
			} else if fi.Size() != layer.UncompressedSize {
				err = fmt.Errorf("layer.tar size %d, want %d", fi.Size(), layer.UncompressedSize)
			}
		}
		after := counters(b.reg)
		b.mr.unmount(m)
		if err != nil {
			b.rows = append(b.rows, naRow(name, "≥ 0.9", err))
			return
		}
		regT = append(regT, d)
		fetched += after.BlobBytesServed - before.BlobBytesServed
	}
	r := speedRow(name, layer.UncompressedSize, median(regT), "curl|gzip", median(baseT),
		fmt.Sprintf("%.3f B per blob byte", float64(fetched)/float64(layer.Size*int64(b.cfg.reps))), "≥ 0.9")
	b.rows = append(b.rows, r)
}

// rssRow: the highest peak RSS of any regfs process in the run.
func (b *bench) rssRow() {
	name := "peak RSS of regfs (VmHWM, highest of all mounts) vs --cache-size"
	m := b.mr.peak()
	if m == nil || m.peakRSS == 0 {
		b.rows = append(b.rows, naRow(name, "cache + fixed overhead", errors.New("no mount measured")))
		return
	}
	cache := m.cacheSize
	if cache <= 0 {
		b.rows = append(b.rows, naRow(name, "cache + fixed overhead", errors.New("the mount's .regfs/config named no cache_size")))
		return
	}
	b.rows = append(b.rows, row{
		name:     name,
		regfs:    fmt.Sprintf("%s (during: %s)", fmtBytes(m.peakRSS), m.phase),
		baseline: "--cache-size " + fmtBytes(cache),
		ratio:    fmt.Sprintf("**%.2f×**", float64(m.peakRSS)/float64(cache)),
		fetched:  fmt.Sprintf("RSS − cache size: %s", fmtSignedBytes(m.peakRSS-cache)),
		target:   "cache + fixed overhead",
	})
}

func (b *bench) table() string {
	var s strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&s, "\nregfs benchmark — %s, %d CPUs, %s RAM, %s/%s, %s; large layer %d MiB content, %d small files, %d rep(s), %d readers × %d reads, --cache-size %s\n\n",
		host, runtime.NumCPU(), fmtBytes(memTotal()), runtime.GOOS, runtime.GOARCH, runtime.Version(),
		b.cfg.largeMB, b.cfg.files, b.cfg.reps, b.cfg.readers, b.cfg.reads, b.cfg.cacheSize)
	fmt.Fprintf(&s, "| measurement | regfs | baseline | ratio | fetched from registry | target |\n")
	fmt.Fprintf(&s, "|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		cells := []string{r.name, r.regfs, r.baseline, r.ratio, r.fetched, r.target}
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(&s, "| %s |\n", strings.Join(cells, " | "))
	}
	s.WriteString("\nRatio: throughput rows are regfs ÷ baseline speed (1.00× = as fast); first-read rows are regfs's time and bytes as a share of a full pull; RSS is peak ÷ --cache-size.\n")
	return s.String()
}

// memTotal is the machine's memory from /proc/meminfo.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			fmt.Sscan(strings.TrimSpace(rest), &kb)
		}
	}
	return kb << 10
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func fmtSignedBytes(n int64) string {
	if n < 0 {
		return "-" + fmtBytes(-n)
	}
	return "+" + fmtBytes(n)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func fmtRate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// firstError is the first line of go build's output that is not a
// "# package" heading.
func firstError(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return firstLine(out)
}
