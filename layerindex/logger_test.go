package layerindex

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// An index or TOC that can't be saved is still served, with one log line.
func TestFailedSaveLogsOneLine(t *testing.T) {
	ctx := context.Background()
	tarData, _ := randomTree(t, 51, 10, 10<<10)
	sgBlob, _ := buildStargz(t, tarData, 4<<10)
	// Dir is a file: nothing can be written under it.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, msg string
		blob      []byte
	}{
		{"gzip", "index not saved", gzipOf(t, tarData, 6)},
		{"estargz", "eStargz TOC not saved", sgBlob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, hook := logtest.NewNullLogger()
			m := newTestManager(t, Options{Dir: notDir, Logger: log})
			if _, err := m.Layer("sha256:k", UncachedBlob(newMemBlob(tc.blob)), LayerOptions{}).Index(ctx); err != nil {
				t.Fatalf("Index: %v", err)
			}
			entries := hook.AllEntries()
			if len(entries) != 1 {
				t.Fatalf("log: got %d lines, want 1: %v", len(entries), entries)
			}
			e := entries[0]
			if e.Level != logrus.WarnLevel || !strings.Contains(e.Message, tc.msg) || e.Data["layer"] != "sha256:k" || e.Data[logrus.ErrorKey] == nil {
				t.Errorf("log line: got %s %q %v, want a warning %q with the layer and the error", e.Level, e.Message, e.Data, tc.msg)
			}
		})
	}
}
