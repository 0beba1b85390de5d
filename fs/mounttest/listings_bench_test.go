package mounttest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// BenchmarkListings: `ls` of 10,000 repositories and `ls -l` of a
// repository's 5,000 tags, each on a fresh mount, against walking the same
// catalog or tag list pages with one net/http client, in one run. The
// ratios (regfs time ÷ page walk time; target ≤ 2) are the metrics.
//
//	go test -run '^$' -bench Listings ./fs/mounttest/
func BenchmarkListings(b *testing.B) {
	if skipWhy != "" {
		b.Skipf("FUSE unusable: %s", skipWhy)
	}
	const repos, tags, repo = 10000, 5000, "tagged/repo"
	r := registrytest.StartRegistry(b, registrytest.WithInMemoryStorage())
	ctx := context.Background()
	p := registrytest.NewPusher(r)
	if err := registrytest.PushTinyRepos(ctx, p, numbered("r", repos), []string{"latest"}, 8); err != nil {
		b.Fatal(err)
	}
	if err := registrytest.PushTinyRepos(ctx, p, []string{repo}, numbered("v", tags), 8); err != nil {
		b.Fatal(err)
	}
	var lsRepos, lsTags, walkRepos, walkTags time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		walkRepos += walkPages(b, r.URL+"/v2/_catalog?n=1000", repos+1)
		walkTags += walkPages(b, r.URL+"/v2/"+repo+"/tags/list?n=1000", tags)

		mnt, done := mountFor(b, r.Host, mountOpts{})
		start := time.Now()
		if es, err := os.ReadDir(mnt); err != nil || len(es) != repos+1 {
			b.Fatalf("ls: %d names, %v", len(es), err)
		}
		lsRepos += time.Since(start)
		done()

		mnt, done = mountFor(b, r.Host, mountOpts{})
		if _, err := os.Stat(filepath.Join(mnt, repo)); err != nil { // the path, known from the catalog
			b.Fatal(err)
		}
		start = time.Now()
		dir := filepath.Join(mnt, repo, "_tags")
		es, err := os.ReadDir(dir)
		if err != nil || len(es) != tags {
			b.Fatalf("ls _tags: %d names, %v", len(es), err)
		}
		for _, e := range es {
			if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
				b.Fatal(err)
			}
		}
		lsTags += time.Since(start)
		done()
	}
	b.ReportMetric(lsRepos.Seconds()/walkRepos.Seconds(), "ls-repos/walk")
	b.ReportMetric(lsTags.Seconds()/walkTags.Seconds(), "ls-l-tags/walk")
	b.ReportMetric(lsRepos.Seconds()*1000/float64(b.N), "ls-repos-ms")
	b.ReportMetric(lsTags.Seconds()*1000/float64(b.N), "ls-l-tags-ms")
}

// walkPages GETs a listing and every page its Link headers name, as one
// plain client would, and checks it saw want names.
func walkPages(b *testing.B, first string, want int) time.Duration {
	b.Helper()
	start := time.Now()
	n := 0
	for next := first; next != ""; {
		resp, err := http.Get(next)
		if err != nil {
			b.Fatal(err)
		}
		var body struct{ Repositories, Tags []string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		n += len(body.Repositories) + len(body.Tags)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			target, _, _ := strings.Cut(strings.TrimPrefix(link, "<"), ">")
			u, err := resp.Request.URL.Parse(target)
			if err != nil {
				b.Fatal(err)
			}
			next = u.String()
		}
	}
	if n != want {
		b.Fatalf("%s: %d names, want %d", first, n, want)
	}
	return time.Since(start)
}
