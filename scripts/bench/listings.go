package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// listingsRepo is the repository of many tags in the listings registry;
// its other repositories are r00000, r00001...
const listingsRepo = "tagged/repo"

// listingRows: `ls` of a directory of many repositories and `ls -l` of a
// repository's many tags, each on a fresh mount, against walking the same
// catalog or tag list pages with one net/http client. They use their own
// registry (in memory) holding config-only images.
func (b *bench) listingRows(ctx context.Context) {
	repos, tags := b.cfg.repos, b.cfg.tags
	reposName := fmt.Sprintf("`ls` of %d repositories, fresh mount vs walking the catalog pages (net/http)", repos)
	tagsName := fmt.Sprintf("coreutils `ls -l` of a repository's %d tags (`_tags/`), fresh mount (its path looked up first) vs walking its tag list pages (net/http)", tags)
	fail := func(err error) {
		b.rows = append(b.rows, naRow(reposName, "≤ 2×", err), naRow(tagsName, "≤ 2×", err))
	}
	logf("listing rows: pushing %d repositories and %d tags", repos, tags)
	reg, err := registrytest.Start(ctx, registrytest.Config{InMemory: true})
	if err != nil {
		fail(err)
		return
	}
	defer reg.Close()
	names := make([]string, repos)
	for i := range names {
		names[i] = fmt.Sprintf("r%05d", i)
	}
	tagNames := make([]string, tags)
	for i := range tagNames {
		tagNames[i] = fmt.Sprintf("v%05d", i)
	}
	p := registrytest.NewPusher(reg)
	if err := registrytest.PushTinyRepos(ctx, p, names, []string{"latest"}, 8); err != nil {
		fail(err)
		return
	}
	if err := registrytest.PushTinyRepos(ctx, p, []string{listingsRepo}, tagNames, 8); err != nil {
		fail(err)
		return
	}
	mr := &mounter{bin: b.mr.bin, host: reg.Host, work: b.cfg.work, args: b.mr.args, broken: b.mr.broken}
	defer mr.unmountAll()

	// coreutils `ls -l` of a local directory of as many directories: what
	// `ls -l` itself costs, which no file system can list under.
	local := filepath.Join(b.cfg.work, "listings-local")
	for _, tag := range tagNames {
		if err := os.MkdirAll(filepath.Join(local, tag), 0o755); err != nil {
			fail(err)
			return
		}
	}
	defer os.RemoveAll(local)

	row := func(name, dir string, long bool, want int, pages string) {
		var regT, baseT, localT []time.Duration
		var requests int
		for rep := 0; rep < b.cfg.reps; rep++ {
			d, n, err := walkPages(ctx, reg.URL+pages)
			if err != nil {
				b.rows = append(b.rows, naRow(name, "≤ 2×", err))
				return
			}
			if n < want {
				b.rows = append(b.rows, naRow(name, "≤ 2×", fmt.Errorf("the registry lists %d names, want %d", n, want)))
				return
			}
			baseT = append(baseT, d)
			if long {
				d, _, err := timeList(ctx, local, true)
				if err != nil {
					b.rows = append(b.rows, naRow(name, "≤ 2×", err))
					return
				}
				localT = append(localT, d)
			}
			m, err := mr.mount(ctx, "listings", "")
			if err != nil {
				b.rows = append(b.rows, naRow(name, "≤ 2×", err))
				return
			}
			// The path to the listed directory is looked up first, untimed:
			// on a fresh mount that costs the catalog, which the first row
			// measures.
			if _, err := statMount(filepath.Join(m.dir, filepath.Dir(dir))); err != nil {
				mr.unmount(m)
				b.rows = append(b.rows, naRow(name, "≤ 2×", err))
				return
			}
			before := reg.Stats().Requests
			d, n, err = timeList(ctx, filepath.Join(m.dir, dir), long)
			after := reg.Stats().Requests
			mr.unmount(m)
			if err == nil && n < want {
				err = fmt.Errorf("listed %d names, want %d", n, want)
			}
			if err != nil {
				b.rows = append(b.rows, naRow(name, "≤ 2×", err))
				return
			}
			regT = append(regT, d)
			requests += int(after - before)
		}
		r, base := median(regT), median(baseT)
		baseline := "net/http page walk " + fmtDur(base)
		if long {
			baseline += fmt.Sprintf(" (`ls -l` of %d local directories: %s)", want, fmtDur(median(localT)))
		}
		b.rows = append(b.rows, row{
			name:     name,
			regfs:    fmtDur(r),
			baseline: baseline,
			ratio:    fmt.Sprintf("**%.2f×** the time", r.Seconds()/base.Seconds()),
			fetched:  fmt.Sprintf("%d requests per listing", requests/b.cfg.reps),
			target:   "≤ 2×",
		})
	}
	row(reposName, "", false, repos, "/v2/_catalog?n=1000")
	row(tagsName, listingsRepo+"/_tags", true, tags, "/v2/"+listingsRepo+"/tags/list?n=1000")
}

// timeList lists dir as `ls` does, or (long) runs coreutils `ls -l dir`
// itself: besides an lstat of every entry, it asks each one for
// security.selinux and POSIX ACLs unless the file system says it has none,
// which a loop of lstat calls would not show. It returns how long it took
// and how many names it saw.
func timeList(ctx context.Context, dir string, long bool) (time.Duration, int, error) {
	var n int
	var d time.Duration
	err := bounded("ls "+dir, opTimeout, func() error {
		start := time.Now()
		if long {
			out, err := exec.CommandContext(ctx, "ls", "-l", dir).Output()
			if err != nil {
				return fmt.Errorf("ls -l %s: %w", dir, err)
			}
			d = time.Since(start)
			n = strings.Count(string(out), "\n") - 1 // the "total" line
			return nil
		}
		es, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		d, n = time.Since(start), len(es)
		return nil
	})
	return d, n, err
}

// walkPages GETs a catalog or tag list and every page its Link headers
// name, as one plain client would, and returns the time and the name count.
func walkPages(ctx context.Context, first string) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	n := 0
	for next := first; next != ""; {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return 0, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		var body struct {
			Repositories, Tags []string
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("GET %s: %w", next, err)
		}
		n += len(body.Repositories) + len(body.Tags)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			target, _, _ := strings.Cut(strings.TrimPrefix(link, "<"), ">")
			u, err := resp.Request.URL.Parse(target)
			if err != nil {
				return 0, 0, err
			}
			next = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawQuery: u.RawQuery}).String()
		}
	}
	return time.Since(start), n, nil
}
