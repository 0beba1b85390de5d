package main

import (
	"context"
	"testing"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

// The helpers the table depends on; trivially fast.
func TestHelpers(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	sorted := []time.Duration{ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(7), ms(8), ms(9), ms(100)}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, ms(5)}, {0.99, ms(100)}, {0, ms(1)}, {1, ms(100)}} {
		if got := percentile(sorted, tc.q); got != tc.want {
			t.Errorf("percentile(%v): got %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.99); got != 0 {
		t.Errorf("percentile of nothing: got %v, want 0", got)
	}
	if got, want := firstError("# pkg\npkg/a.go:1: undefined: x\n"), "pkg/a.go:1: undefined: x"; got != want {
		t.Errorf("firstError: got %q, want %q", got, want)
	}
}

// benchRegistry serves one image of n small files and returns the registry.
func benchRegistry(b *testing.B, n int) *registrytest.Registry {
	b.Helper()
	reg := registrytest.StartRegistry(b)
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: smallFileEntries(n, 3)})
	if err != nil {
		b.Fatal(err)
	}
	img, err := registrytest.BuildImage(registrytest.ImageSpec{Layers: []*registrytest.Layer{l}})
	if err != nil {
		b.Fatal(err)
	}
	if err := registrytest.NewPusher(reg).PushImage(context.Background(), benchRepo, img, tagGzip); err != nil {
		b.Fatal(err)
	}
	return reg
}

// BenchmarkBaselineGET is the net/http ceiling the blob rows compare
// against, for a small-file layer blob from the in-process registry.
func BenchmarkBaselineGET(b *testing.B) {
	reg := benchRegistry(b, 2000)
	l, err := registrytest.BuildLayer(registrytest.LayerSpec{Entries: smallFileEntries(2000, 3)})
	if err != nil {
		b.Fatal(err)
	}
	url := reg.URL + "/v2/" + benchRepo + "/blobs/" + l.Digest.String()
	b.SetBytes(l.Size)
	for b.Loop() {
		if _, _, err := httpGet(context.Background(), url); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselinePullAndWalk is the full-pull baseline of the first-read
// rows (manifest, blob, gunzip, tar walk) on a 2000-file image.
func BenchmarkBaselinePullAndWalk(b *testing.B) {
	reg := benchRegistry(b, 2000)
	for b.Loop() {
		if _, files, err := pullAndWalk(context.Background(), reg.URL, benchRepo, tagGzip); err != nil || files != 2000 {
			b.Fatalf("got %d files, %v; want 2000 files", files, err)
		}
	}
}
