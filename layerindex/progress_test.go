package layerindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// gatedBlob holds reads in [from, to) until open is closed, or fails them
// with fail if set.
type gatedBlob struct {
	*memBlob
	from, to int64
	open     chan struct{}
	fail     error
}

func (b *gatedBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= b.from && off < b.to {
		if b.fail != nil {
			return 0, b.fail
		}
		select {
		case <-b.open:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return b.memBlob.ReadAt(ctx, p, off)
}

// The Manager lists every layer's index progress, also while a pass runs.
func TestManagerProgress(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 41, 40, 100<<10)
	gz := gzipOf(t, tarData, 6)
	const readSize = 64 << 10
	m := newTestManager(t, Options{ReadSize: readSize})

	// The pass reads the eStargz footer, then the blob from the start.
	gated := &gatedBlob{memBlob: newMemBlob(gz), from: 2 * readSize, to: int64(len(gz)) - 1024, open: make(chan struct{})}
	building := m.Layer("building", UncachedBlob(gated), LayerOptions{})
	m.Layer("idle", UncachedBlob(newMemBlob(gz)), LayerOptions{})
	failing := &gatedBlob{memBlob: newMemBlob(gz), from: readSize, to: int64(len(gz)) - 1024, fail: errors.New("registry says no")}
	failed := m.Layer("failed", UncachedBlob(failing), LayerOptions{})
	sgBlob, _ := buildStargz(t, tarData, 64<<10)
	sg := m.Layer("estargz", UncachedBlob(newMemBlob(sgBlob)), LayerOptions{})

	building.Prefetch(ctx)
	if _, err := failed.Index(ctx); err == nil {
		t.Fatal("Index of a failing blob: got no error")
	}
	if _, err := sg.Index(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until the pass has read what the gate lets through.
	deadline := time.Now().Add(10 * time.Second)
	for building.Progress().Done < 2*readSize && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := m.Progress()
	total := int64(len(gz))
	for _, tc := range []struct {
		key   string
		state IndexState
		done  int64
	}{
		{"building", IndexBuilding, 2 * readSize},
		{"idle", IndexIdle, 0},
		{"failed", IndexFailed, readSize},
		{"estargz", IndexReady, -1}, // ready: done is the whole blob, though only the TOC was read
	} {
		p, ok := got[tc.key]
		if !ok {
			t.Errorf("Progress: %s missing", tc.key)
			continue
		}
		want := m.layers[tc.key].blob.Size()
		if tc.done < 0 {
			tc.done = want
		}
		if p.State != tc.state || p.Done != tc.done || p.Total != want {
			t.Errorf("Progress[%s]: got %+v, want state %q done %d total %d", tc.key, p, tc.state, tc.done, want)
		}
	}
	if p := got["failed"]; !strings.Contains(p.Err, "registry says no") {
		t.Errorf("Progress[failed]: got error %q, want the cause", p.Err)
	}
	// Status files show a failed state with its cause, as one string.
	if b, err := json.Marshal(got["failed"]); err != nil || !bytes.Contains(b, []byte(`"state":"failed: `)) || !bytes.Contains(b, []byte("registry says no")) {
		t.Errorf("Progress[failed] as JSON: got %s, %v; want state \"failed: <cause>\"", b, err)
	}
	var back Progress
	if b, _ := json.Marshal(got["failed"]); json.Unmarshal(b, &back) != nil || back != got["failed"] {
		t.Errorf("Progress[failed] through JSON: got %+v, want %+v", back, got["failed"])
	}
	close(gated.open)
	if _, err := building.Index(ctx); err != nil {
		t.Fatal(err)
	}
	if p := m.Progress()["building"]; p.State != IndexReady || p.Done != total || p.Total != total {
		t.Errorf("Progress[building] after the pass: got %+v, want ready %d/%d", p, total, total)
	}
}

// A build asked for once the index is ready (Prefetch asks after its
// eStargz check, which may take longer than a small layer's whole pass)
// starts no second pass: the layer stays ready and the blob is not read.
func TestStartBuildAfterReady(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 3, 10, 64<<10)
	blob := newMemBlob(gzipOf(t, tarData, 6))
	m := newTestManager(t, Options{})
	l := m.Layer("sha256:ready-once", UncachedBlob(blob), LayerOptions{})
	if _, err := l.Index(ctx); err != nil {
		t.Fatal(err)
	}
	blob.reset()
	b := l.startBuild(ctx)
	select {
	case <-b.done:
	default:
		t.Fatal("startBuild after the index is ready: a pass runs, want none")
	}
	if b.err != nil || b.idx == nil {
		t.Errorf("startBuild after the index is ready: got %v, %v; want the index", b.idx, b.err)
	}
	if p := l.Progress(); p.State != IndexReady || p.Done != p.Total {
		t.Errorf("progress: got %+v, want ready and done", p)
	}
	if calls, _ := blob.counts(); calls != 0 {
		t.Errorf("blob reads: got %d, want 0", calls)
	}
}
