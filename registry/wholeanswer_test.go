package registry

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// blobGETs returns the blob GETs the fault proxy logged, once all are done.
func blobGETs(t *testing.T, proxy *registrytest.FaultProxy) []registrytest.Request {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var gets []registrytest.Request
		done := true
		for _, q := range proxy.Requests() {
			if q.Method == "GET" && bytes.Contains([]byte(q.Path), []byte("/blobs/")) {
				gets = append(gets, q)
				done = done && q.Done
			}
		}
		if done {
			return gets
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob GETs still running: %+v", gets)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answersEnded waits until no whole answer of c is being read: the server
// may be done sending one before the client is done reading it.
func answersEnded(t *testing.T, c *v2Client) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c.gates.mu.Lock()
		reading := 0
		for _, e := range c.gates.m {
			if e.answer != nil {
				reading++
			}
		}
		c.gates.mu.Unlock()
		if reading == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d whole answers still being read", reading)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A server answering Range requests with the whole blob (200), as a cold
// pull-through cache does: every read at any offset gets its bytes, and
// every such answer is read to its end, so the cache would keep the blob.
func TestBlobWholeAnswerToRange(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	c := newClient(t, proxy.Host, testOptions())
	b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(want))
	proxy.IgnoreRange(0, registrytest.BlobGETs)
	for _, tt := range []struct {
		name   string
		off, n int64
	}{
		{"head", 0, 4},
		{"middle", size / 2, 5000},
		{"tail", size - 51, 51},
		{"last byte", size - 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proxy.ResetStats()
			p := make([]byte, tt.n)
			if n, err := b.ReadAt(ctx, p, tt.off); err != nil || int64(n) != tt.n || !bytes.Equal(p, want[tt.off:tt.off+tt.n]) {
				t.Fatalf("ReadAt(%d, %d): got %d, %v, bytes equal %v", tt.off, tt.n, n, err, bytes.Equal(p, want[tt.off:tt.off+tt.n]))
			}
			gets := blobGETs(t, proxy)
			answersEnded(t, c)
			if len(gets) != 1 || gets[0].Status != 200 || gets[0].Bytes != size {
				t.Errorf("got blob GETs %+v; want one 200 read to its end (%d bytes)", gets, size)
			}
		})
	}

	// The verdict is per answer: once Range is honoured (a warm cache),
	// the same blob gets 206 and only the bytes asked for.
	proxy.Clear()
	proxy.ResetStats()
	p := make([]byte, 5000)
	if _, err := b.ReadAt(ctx, p, 3<<20); err != nil || !bytes.Equal(p, want[3<<20:3<<20+5000]) {
		t.Fatalf("ReadAt(3 MiB), Range honoured again: %v", err)
	}
	if gets := blobGETs(t, proxy); len(gets) != 1 || gets[0].Status != 206 || gets[0].Bytes != 5000 {
		t.Errorf("Range honoured again: got blob GETs %+v; want one 206 of 5000 bytes", gets)
	}
}

// While a whole answer is read, another read of the blob takes its bytes
// from it when the answer has not reached them yet, and waits for its end
// (then asks with Range) when it has passed them: no second whole answer.
func TestBlobWholeAnswerShared(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	c := newClient(t, proxy.Host, testOptions())
	b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	// One whole answer, which pauses at 1 MiB long enough for the reads
	// below to find it running; later requests get Range honoured.
	proxy.Add(registrytest.Fault{Match: registrytest.BlobGETs, Times: 1, IgnoreRange: true,
		StallBody: time.Second, StallAt: 1 << 20})
	p := make([]byte, 1000)
	if _, err := b.ReadAt(ctx, p, 100); err != nil || !bytes.Equal(p, want[100:1100]) {
		t.Fatalf("ReadAt(100): %v", err)
	}
	spans := []struct{ off, n int64 }{
		{0, 1000},            // passed: waits for the end, then a 206
		{4 << 20, 100 << 10}, // ahead: from the answer
		{int64(len(want)) - 10, 10},
	}
	var wg sync.WaitGroup
	for _, sp := range spans {
		wg.Go(func() {
			p := make([]byte, sp.n)
			if _, err := b.ReadAt(ctx, p, sp.off); err != nil || !bytes.Equal(p, want[sp.off:sp.off+sp.n]) {
				t.Errorf("ReadAt(%d, %d) during the whole answer: %v, bytes equal %v", sp.off, sp.n, err, bytes.Equal(p, want[sp.off:sp.off+sp.n]))
			}
		})
	}
	wg.Wait()
	gets := blobGETs(t, proxy)
	if len(gets) != 2 || gets[0].Status != 200 || gets[0].Bytes != int64(len(want)) || gets[1].Status != 206 || gets[1].Range != "bytes=0-999" {
		t.Errorf("got blob GETs %+v; want the whole answer read to its end, then one 206 of bytes 0-999", gets)
	}
}

// A whole answer that breaks: the reads it fed resume from their next byte
// with a request of their own, and get the right bytes.
func TestBlobWholeAnswerBreaks(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	ctx := context.Background()
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	c := newClient(t, proxy.Host, testOptions())
	b, err := c.OpenBlob(ctx, registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	const cut = 3 << 20
	for _, tt := range []struct {
		name   string
		off, n int64
	}{
		{"span across the cut", cut - 1000, 300 << 10},
		{"span past the cut", cut + 1<<20, 1000},
		{"stream to the end", 100, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			answersEnded(t, c)
			proxy.Clear()
			proxy.Add(registrytest.Fault{Match: registrytest.BlobGETs, Times: 1, IgnoreRange: true, Cut: true, CutAfter: cut})
			before := b.(*v2Blob).rr.resumes.Load()
			rc, err := b.Open(ctx, tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			_, err = got.ReadFrom(rc)
			rc.Close()
			end := int64(len(want))
			if tt.n >= 0 {
				end = tt.off + tt.n
			}
			if err != nil || !bytes.Equal(got.Bytes(), want[tt.off:end]) {
				t.Fatalf("Open(%d, %d) through a whole answer cut at %d: %d bytes, %v; bytes equal %v",
					tt.off, tt.n, cut, got.Len(), err, bytes.Equal(got.Bytes(), want[tt.off:end]))
			}
			if b.(*v2Blob).rr.resumes.Load() == before {
				t.Errorf("no resume happened: the cut did not bite")
			}
		})
	}
}

// The whole answer outlives its requester: it is read to its end after
// the read that asked for it returned and its context ended.
func TestBlobWholeAnswerOutlivesReader(t *testing.T) {
	reg, fx, want := largeRegistry(t)
	proxy := registrytest.StartFaultProxy(t, reg.URL)
	c := newClient(t, proxy.Host, testOptions())
	b, err := c.OpenBlob(context.Background(), registrytest.RepoLarge, largeLayer(fx))
	if err != nil {
		t.Fatal(err)
	}
	// The pause keeps the answer running after the read returned.
	proxy.Add(registrytest.Fault{Match: registrytest.BlobGETs, Times: 1, IgnoreRange: true,
		StallBody: 300 * time.Millisecond, StallAt: 1 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	p := make([]byte, 1000)
	_, err = b.ReadAt(ctx, p, 100)
	cancel()
	if err != nil || !bytes.Equal(p, want[100:1100]) {
		t.Fatalf("ReadAt(100): %v", err)
	}
	if gets := blobGETs(t, proxy); len(gets) != 1 || gets[0].Bytes != int64(len(want)) {
		t.Errorf("got blob GETs %+v; want one whole answer read to its end (%d bytes)", gets, len(want))
	}
}
