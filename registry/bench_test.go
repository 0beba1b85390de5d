package registry

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// benchLargeSize is the content size of test/large for the benchmark; its
// gzip blob is about 70 % of it.
const benchLargeSize = 384 << 20

// BenchmarkBlobThroughput reads the large blob whole through Blob.Open
// (which also checks its sha256) and through a plain net/http GET of the
// same URL, alternately in one run, and reports both rates and the ratio
// client/plain. plain+sha256-MB/s is the plain GET with the same hashing,
// and client-ranged-MB/s a ranged Open of all but the last byte (which is
// not hashed), to separate the cost of the check from that of the client.
//
//	go test -run '^$' -bench BlobThroughput ./registry/
func BenchmarkBlobThroughput(b *testing.B) {
	reg := registrytest.StartRegistry(b)
	fx := registrytest.PushFixtures(b, reg, registrytest.WithLargeSize(benchLargeSize))
	l := fx.Large.Layers[0]
	ctx := context.Background()
	o := testOptions()
	o.RequestTimeout = 0 // the default
	c := newClient(b, reg.Host, o)
	blob, err := c.OpenBlob(ctx, registrytest.RepoLarge, Layer{Digest: l.Digest, Size: l.Size})
	if err != nil {
		b.Fatal(err)
	}
	url := reg.URL + "/v2/" + registrytest.RepoLarge + "/blobs/" + l.Digest.String()
	plain := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	// Reads of 1 MiB for all three: io.Discard's ReadFrom would read in
	// 8 KiB pieces instead, and the hash writer has none.
	buf := make([]byte, 1<<20)
	discard := struct{ io.Writer }{io.Discard}

	// n < 0: the whole blob, hashed; else a ranged span, not hashed.
	viaClientN := func(n int64) {
		rc, err := blob.Open(ctx, 0, n)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.CopyBuffer(discard, rc, buf)
		rc.Close()
		if err != nil || (n < 0 && got != l.Size) || (n >= 0 && got != n) {
			b.Fatalf("client read %d bytes, %v; want %d", got, err, n)
		}
	}
	viaClient := func() { viaClientN(-1) }
	viaPlain := func(w io.Writer) {
		resp, err := plain.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(w, resp.Body, buf)
		resp.Body.Close()
		if err != nil || n != l.Size || resp.StatusCode != http.StatusOK {
			b.Fatalf("plain GET: status %d, %d bytes, %v; want %d", resp.StatusCode, n, err, l.Size)
		}
	}
	timed := func(f func()) time.Duration {
		t := time.Now()
		f()
		return time.Since(t)
	}
	viaClient() // warm: connections, token, page cache
	viaPlain(discard)

	var dClient, dPlain, dPlainHash, dRanged time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			dClient += timed(viaClient)
			dPlain += timed(func() { viaPlain(discard) })
		} else {
			dPlain += timed(func() { viaPlain(discard) })
			dClient += timed(viaClient)
		}
		dPlainHash += timed(func() { viaPlain(sha256.New()) })
		dRanged += timed(func() { viaClientN(l.Size - 1) })
	}
	b.StopTimer()
	mb := float64(l.Size) * float64(b.N) / 1e6
	b.ReportMetric(mb/dClient.Seconds(), "client-MB/s")
	b.ReportMetric(mb/dPlain.Seconds(), "plain-MB/s")
	b.ReportMetric(mb/dPlainHash.Seconds(), "plain+sha256-MB/s")
	b.ReportMetric(mb/dRanged.Seconds(), "client-ranged-MB/s")
	b.ReportMetric(dPlain.Seconds()/dClient.Seconds(), "client/plain")
	b.ReportMetric(0, "ns/op") // ns/op mixes four reads; the rates above are the figures
}
