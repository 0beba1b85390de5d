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
	"strings"
	"time"
)

// Names and targets of the rootfs rows.
const (
	rowCatEStargz   = "first `cat` of one small file in `rootfs/`, eStargz, fresh mount"
	rowCatGzipCold  = "first `cat` of one small file in `rootfs/`, gzip, fresh mount (index pass included)"
	rowCatGzipIndex = "first `cat` of one small file in `rootfs/`, gzip, after the index pass"
	rowCatGzipPers  = "first `cat` of one small file in `rootfs/`, gzip, fresh mount with the persisted index (block cache emptied)"
	targetEStargz   = "bytes < 1 %"
	targetGzipIndex = "bytes < 2 %"
)

// firstRead is one timed first read and what it fetched (all requests:
// manifests and configs included).
type firstRead struct {
	times   []time.Duration
	fetched int64 // summed over repetitions
}

func (f *firstRead) add(d time.Duration, bytes int64) {
	f.times = append(f.times, d)
	f.fetched += bytes
}

// rootfsRows: small-file reads, ls -R and parallel readers under rootfs/.
func (b *bench) rootfsRows(ctx context.Context) {
	lsNames := []string{
		"`ls -R rootfs` gzip, fresh mount (index pass included) vs `ls -R` of a local copy",
		"`ls -R rootfs` gzip, warm (same mount again) vs local",
		"`ls -R rootfs` gzip, fresh mount with the persisted index vs local",
		"`ls -R rootfs` eStargz, fresh mount vs local",
		"`ls -R rootfs` eStargz, warm vs local",
	}
	parNames := []string{
		fmt.Sprintf("%d parallel readers of random files, gzip, persisted index, data cold vs local copy", b.cfg.readers),
		fmt.Sprintf("%d parallel readers, gzip, warm (same files again) vs local copy", b.cfg.readers),
		fmt.Sprintf("%d parallel readers of random files, eStargz, fresh mount vs local copy", b.cfg.readers),
		fmt.Sprintf("%d parallel readers, eStargz, warm vs local copy", b.cfg.readers),
	}
	allRows := func(err error) {
		for _, n := range []struct{ name, target string }{
			{rowCatEStargz, targetEStargz}, {rowCatGzipCold, ""}, {rowCatGzipIndex, targetGzipIndex}, {rowCatGzipPers, ""},
		} {
			b.rows = append(b.rows, naRow(n.name, n.target, err))
		}
		for _, n := range append(lsNames, parNames...) {
			b.rows = append(b.rows, naRow(n, "", err))
		}
	}

	// Is there a rootfs/ in this build at all?
	m, err := b.mr.mount(ctx, "rootfs probe", b.cacheDir("probe"))
	if err != nil {
		allRows(err)
		return
	}
	_, err = statMount(imagePath(m, tagEStargz, "rootfs"))
	b.mr.unmount(m)
	if errors.Is(err, os.ErrNotExist) {
		allRows(errors.New("no rootfs/ in this regfs build"))
		return
	} else if err != nil {
		allRows(err)
		return
	}

	logf("rootfs rows: baselines (full pull + extract, local copy)")
	b.local = filepath.Join(b.cfg.work, "local-rootfs")
	if err := extractLocal(b.set.gzip, b.local); err != nil {
		allRows(fmt.Errorf("local copy: %w", err))
		return
	}
	type pull struct {
		times []time.Duration
		bytes int64 // one pull
	}
	pulls := map[string]*pull{}
	for _, tag := range []string{tagGzip, tagEStargz} {
		p := &pull{}
		for rep := 0; rep < b.cfg.reps; rep++ {
			before := counters(b.reg)
			d, files, err := pullAndWalk(ctx, b.reg.URL, benchRepo, tag)
			if err != nil {
				allRows(fmt.Errorf("baseline pull of %s: %w", tag, err))
				return
			}
			after := counters(b.reg)
			if files < len(b.set.files) {
				allRows(fmt.Errorf("baseline pull of %s saw %d files, want at least %d", tag, files, len(b.set.files)))
				return
			}
			p.times, p.bytes = append(p.times, d), after.BytesServed-before.BytesServed
		}
		pulls[tag] = p
	}
	lsLocalOut := filepath.Join(b.cfg.work, "ls-local.txt")
	lsScript := func(dir, out string) string { return fmt.Sprintf("cd %q && ls -R . > %q", dir, out) }
	if _, err := timeShell(ctx, lsScript(b.local, lsLocalOut)); err != nil { // warms the dentry cache
		allRows(err)
		return
	}
	var lsLocalT []time.Duration
	for rep := 0; rep < b.cfg.reps; rep++ {
		d, err := timeShell(ctx, lsScript(b.local, lsLocalOut))
		if err != nil {
			allRows(err)
			return
		}
		lsLocalT = append(lsLocalT, d)
	}
	wantLs, _ := os.ReadFile(lsLocalOut)
	// The eStargz image's own tree also holds eStargz's TOC and landmark
	// entries: its listing is checked against its own local copy.
	wantByTag := map[string][]byte{tagGzip: wantLs}
	localSz := filepath.Join(b.cfg.work, "local-rootfs-estargz")
	szOut := filepath.Join(b.cfg.work, "ls-local-estargz.txt")
	if err := extractLocal(b.set.estargz, localSz); err != nil {
		allRows(fmt.Errorf("local copy of the eStargz image: %w", err))
		return
	}
	if _, err := timeShell(ctx, lsScript(localSz, szOut)); err != nil {
		allRows(err)
		return
	}
	wantByTag[tagEStargz], _ = os.ReadFile(szOut)

	// ls -R through the mount; the output must equal the local copy's.
	lsMount := func(m *mount, tag string) (time.Duration, int64, error) {
		out := filepath.Join(b.cfg.work, "ls-mount.txt")
		before := counters(b.reg)
		d, err := timeShell(ctx, lsScript(imagePath(m, tag, "rootfs"), out))
		after := counters(b.reg)
		if err != nil {
			return d, 0, err
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, wantByTag[tag]) {
			return d, 0, fmt.Errorf("ls -R of %s rootfs differs from a local extraction of the same image (%d vs %d bytes of listing)", tag, len(got), len(wantByTag[tag]))
		}
		return d, after.BytesServed - before.BytesServed, nil
	}
	// catTarget is the first read of the target file, checked byte for byte.
	target := b.set.target
	want := target.data()
	catTarget := func(m *mount, tag string) (time.Duration, int64, error) {
		var out bytes.Buffer
		before := counters(b.reg)
		seen := len(b.reg.Requests())
		d, err := timeCmd(ctx, &out, "cat", imagePath(m, tag, "rootfs", target.path))
		after := counters(b.reg)
		if b.cfg.trace {
			b.traceRequests(m.phase, seen)
		}
		if err == nil && !bytes.Equal(out.Bytes(), want) {
			err = fmt.Errorf("WRONG BYTES: %s read %d bytes, differing from the image's %d", target.path, out.Len(), len(want))
		}
		return d, after.BytesServed - before.BytesServed, err
	}

	var catSz, catGzCold, catGzIndex, catGzPers firstRead
	lsT := make([][]time.Duration, len(lsNames))
	lsF := make([]int64, len(lsNames))
	lsErr := make([]error, len(lsNames))
	catErr := map[string]error{}
	parRes := make([]readResult, len(parNames))
	parErr := make([]error, len(parNames))
	for i := range parErr {
		parErr[i] = errors.New("not run")
	}
	var localPar readResult
	localParErr := errors.New("not run")

	// step mounts, runs fn and unmounts; a mount failure is fn's error.
	step := func(phase, cache string, fn func(m *mount) error) error {
		m, err := b.mr.mount(ctx, phase, cache)
		if err != nil {
			return err
		}
		defer func() {
			if err := b.mr.unmount(m); err != nil {
				logf("warning: %v", err)
			}
		}()
		return fn(m)
	}
	recordLs := func(i int, m *mount, tag string) {
		if lsErr[i] != nil {
			return
		}
		d, f, err := lsMount(m, tag)
		if err != nil {
			lsErr[i] = err
			return
		}
		lsT[i], lsF[i] = append(lsT[i], d), lsF[i]+f
	}
	recordCat := func(name string, fr *firstRead, m *mount, tag string) {
		if catErr[name] != nil {
			return
		}
		d, f, err := catTarget(m, tag)
		if err != nil {
			catErr[name] = err
			return
		}
		fr.add(d, f)
	}
	for rep := 0; rep < b.cfg.reps; rep++ {
		logf("rootfs rows: repetition %d/%d", rep+1, b.cfg.reps)
		// eStargz: first cat on a fresh mount.
		if err := step("eStargz first cat", b.cacheDir("sz-cat"), func(m *mount) error {
			recordCat(rowCatEStargz, &catSz, m, tagEStargz)
			return nil
		}); err != nil {
			catErr[rowCatEStargz] = err
		}
		// eStargz: ls -R cold and warm.
		if err := step("eStargz ls -R", b.cacheDir("sz-ls"), func(m *mount) error {
			recordLs(3, m, tagEStargz)
			recordLs(4, m, tagEStargz)
			return nil
		}); err != nil {
			lsErr[3], lsErr[4] = err, err
		}
		// gzip: first cat on a fresh mount, index pass included.
		if err := step("gzip first cat (cold)", b.cacheDir("gz-cold"), func(m *mount) error {
			recordCat(rowCatGzipCold, &catGzCold, m, tagGzip)
			return nil
		}); err != nil {
			catErr[rowCatGzipCold] = err
		}
		// gzip: ls -R cold (builds the indexes), warm, then the first cat.
		cache := b.cacheDir("gz-index")
		if err := step("gzip ls -R, cat after index", cache, func(m *mount) error {
			recordLs(0, m, tagGzip)
			recordLs(1, m, tagGzip)
			recordCat(rowCatGzipIndex, &catGzIndex, m, tagGzip)
			return nil
		}); err != nil {
			lsErr[0], lsErr[1], catErr[rowCatGzipIndex] = err, err, err
		}
		// gzip: a fresh mount over the persisted index, with the blocks
		// gone, so the read fetches what the index says it needs.
		if blobs, indexes, err := dropBlocks(ctx, b.mr.bin, cache); err != nil {
			catErr[rowCatGzipPers], lsErr[2] = err, err
		} else {
			logf("gzip persisted index: removed the blocks of %d blobs, kept %d index files", blobs, indexes)
		}
		if err := step("gzip persisted index", cache, func(m *mount) error {
			recordCat(rowCatGzipPers, &catGzPers, m, tagGzip)
			recordLs(2, m, tagGzip)
			if rep == 0 {
				parRes[0], parErr[0] = b.parallel(ctx, imagePath(m, tagGzip, "rootfs"))
				parRes[1], parErr[1] = b.parallel(ctx, imagePath(m, tagGzip, "rootfs"))
			}
			return nil
		}); err != nil {
			catErr[rowCatGzipPers], lsErr[2] = err, err
		}
		if rep == 0 {
			if err := step("eStargz parallel readers", b.cacheDir("sz-par"), func(m *mount) error {
				parRes[2], parErr[2] = b.parallel(ctx, imagePath(m, tagEStargz, "rootfs"))
				parRes[3], parErr[3] = b.parallel(ctx, imagePath(m, tagEStargz, "rootfs"))
				return nil
			}); err != nil {
				parErr[2], parErr[3] = err, err
			}
			localPar, localParErr = b.parallel(ctx, b.local)
		}
	}

	// The table rows.
	reps := int64(b.cfg.reps)
	catRow := func(name, target string, fr *firstRead, tag string) {
		if err := catErr[name]; err != nil {
			b.rows = append(b.rows, naRow(name, target, err))
			return
		}
		p := pulls[tag]
		rt, pt := median(fr.times), median(p.times)
		f := fr.fetched / reps
		b.rows = append(b.rows, row{
			name:     name,
			regfs:    fmt.Sprintf("%s, %s fetched", fmtDur(rt), fmtBytes(f)),
			baseline: fmt.Sprintf("pull + gunzip + tar walk of the %s image: %s, %s", tag, fmtDur(pt), fmtBytes(p.bytes)),
			ratio:    fmt.Sprintf("**%s** of the time", pct(rt.Seconds()/pt.Seconds())),
			fetched:  fmt.Sprintf("**%s** of the image", pct(float64(f)/float64(p.bytes))),
			target:   target,
		})
	}
	catRow(rowCatEStargz, targetEStargz, &catSz, tagEStargz)
	catRow(rowCatGzipCold, "", &catGzCold, tagGzip)
	catRow(rowCatGzipIndex, targetGzipIndex, &catGzIndex, tagGzip)
	catRow(rowCatGzipPers, "", &catGzPers, tagGzip)

	entries := int64(len(bytes.Split(wantLs, []byte("\n"))))
	for i, name := range lsNames {
		if lsErr[i] != nil {
			b.rows = append(b.rows, naRow(name, "", lsErr[i]))
			continue
		}
		rt, lt := median(lsT[i]), median(lsLocalT)
		b.rows = append(b.rows, row{
			name:     name,
			regfs:    fmtDur(rt),
			baseline: fmt.Sprintf("%s (%d lines)", fmtDur(lt), entries),
			ratio:    fmt.Sprintf("**%.2f×**", lt.Seconds()/rt.Seconds()),
			fetched:  fmtBytes(lsF[i] / reps),
		})
	}
	for i, name := range parNames {
		if parErr[i] == nil && localParErr != nil {
			parErr[i] = fmt.Errorf("local baseline: %w", localParErr)
		}
		if parErr[i] != nil {
			b.rows = append(b.rows, naRow(name, "", parErr[i]))
			continue
		}
		r := parRes[i]
		b.rows = append(b.rows, row{
			name:     name,
			regfs:    fmt.Sprintf("%.0f MiB/s, %.0f files/s, p50 %s, p99 %s", r.mibps(), float64(r.reads)/r.wall.Seconds(), fmtDur(r.p50), fmtDur(r.p99)),
			baseline: fmt.Sprintf("%.0f MiB/s, %.0f files/s, p50 %s, p99 %s", localPar.mibps(), float64(localPar.reads)/localPar.wall.Seconds(), fmtDur(localPar.p50), fmtDur(localPar.p99)),
			ratio:    fmt.Sprintf("**%.2f×** (p99 %.3g× the local p99)", r.mibps()/localPar.mibps(), r.p99.Seconds()/localPar.p99.Seconds()),
			fetched:  fmt.Sprintf("%s for %s read", fmtBytes(r.fetched), fmtBytes(r.bytes)),
		})
	}
}

// dropBlocks empties the block cache under a regfs --cache-dir and keeps
// the persisted layer indexes, with `regfs cache clear --keep-indexes`.
// (Removing the disk tier's directory took the indexes with it, and the
// "persisted index" row measured an index pass.) It fails when there is no
// block or no index to keep, or blocks are left: the row would measure
// something else than it says.
func dropBlocks(ctx context.Context, bin, cacheDir string) (blobs, indexes int, err error) {
	du := func() (blobs, files int, err error) {
		out, err := exec.CommandContext(ctx, bin, "cache", "du", "--json", "--cache-dir", cacheDir).Output()
		if err != nil {
			return 0, 0, fmt.Errorf("regfs cache du: %w", err)
		}
		var u struct {
			Blobs int `json:"blobs"`
			Files int `json:"files"`
		}
		if err := json.Unmarshal(out, &u); err != nil {
			return 0, 0, fmt.Errorf("regfs cache du --json: %w", err)
		}
		return u.Blobs, u.Files, nil
	}
	blobs, indexes, err = du()
	if err == nil && (blobs == 0 || indexes == 0) {
		err = fmt.Errorf("found %d cached blobs and %d persisted indexes, want some of each", blobs, indexes)
	}
	if err == nil {
		if out, cerr := exec.CommandContext(ctx, bin, "cache", "clear", "--keep-indexes", "--cache-dir", cacheDir).CombinedOutput(); cerr != nil {
			err = fmt.Errorf("regfs cache clear --keep-indexes: %w: %s", cerr, bytes.TrimSpace(out))
		}
	}
	if err == nil {
		var left, kept int
		if left, kept, err = du(); err == nil && (left != 0 || kept != indexes) {
			err = fmt.Errorf("after regfs cache clear --keep-indexes: %d blobs and %d indexes, want 0 and %d", left, kept, indexes)
		}
	}
	if err != nil {
		return blobs, indexes, fmt.Errorf("empty the block cache in %s: %w", cacheDir, err)
	}
	return blobs, indexes, nil
}

// parallel runs the parallel readers over root.
func (b *bench) parallel(ctx context.Context, root string) (readResult, error) {
	before := counters(b.reg)
	r, err := parallelRead(ctx, root, b.set.files, b.cfg.readers, b.cfg.reads, 42)
	r.fetched = counters(b.reg).BytesServed - before.BytesServed
	return r, err
}

func pct(f float64) string {
	switch {
	case f >= 0.1:
		return fmt.Sprintf("%.0f %%", f*100)
	case f >= 0.001:
		return fmt.Sprintf("%.2f %%", f*100)
	}
	return fmt.Sprintf("%.3f %%", f*100)
}

// traceRequests logs the registry requests after the first seen, grouped:
// one line per run of consecutive requests to the same path.
func (b *bench) traceRequests(phase string, seen int) {
	reqs := b.reg.Requests()
	if seen > len(reqs) {
		seen = len(reqs)
	}
	logf("trace %s: %d requests", phase, len(reqs)-seen)
	for i := seen; i < len(reqs); {
		j, total := i, int64(0)
		for j < len(reqs) && reqs[j].Path == reqs[i].Path && reqs[j].Method == reqs[i].Method {
			total += reqs[j].Bytes
			j++
		}
		p := reqs[i].Path
		if k := strings.LastIndexByte(p, '/'); k >= 0 && len(p)-k > 20 {
			p = p[:k+20] + "…"
		}
		logf("  %dx %s %s, %s, first range %q", j-i, reqs[i].Method, p, fmtBytes(total), reqs[i].Range)
		i = j
	}
}
