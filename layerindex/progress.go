package layerindex

import (
	"encoding/json"
	"fmt"
	"strings"
)

// IndexState is where a layer's index stands.
type IndexState string

const (
	IndexIdle      IndexState = "idle"      // no index asked for yet
	IndexBuilding  IndexState = "building"  // an index pass runs
	IndexReady     IndexState = "ready"     // built, loaded from disk, or an eStargz TOC read
	IndexFailed    IndexState = "failed"    // the last pass failed; Progress.Err says why
	IndexPublished IndexState = "published" // a published index serves the layer, no pass run
)

// Progress is the state of a layer's index, for status files.
type Progress struct {
	State IndexState
	Err   string // why the last pass failed, when State is IndexFailed
	// Done is how far into the stored blob the index pass has got: the
	// bytes it read, or for an uncompressed tar, whose pass reads only the
	// headers, the offset of the last header read.
	Done  int64
	Total int64 // blob size
}

// progressJSON is Progress as status files show it: a failed state reads
// "failed: <error>".
type progressJSON struct {
	State string `json:"state"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

func (p Progress) MarshalJSON() ([]byte, error) {
	s := string(p.State)
	if p.State == IndexFailed {
		s += ": " + p.Err
	}
	return json.Marshal(progressJSON{State: s, Done: p.Done, Total: p.Total})
}

func (p *Progress) UnmarshalJSON(b []byte) error {
	var j progressJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("index progress: %w", err)
	}
	*p = Progress{State: IndexState(j.State), Done: j.Done, Total: j.Total}
	if cause, ok := strings.CutPrefix(j.State, string(IndexFailed)+": "); ok {
		p.State, p.Err = IndexFailed, cause
	}
	return nil
}

// Progress reports the index pass; cheap, never does I/O or waits on it.
func (l *Layer) Progress() Progress {
	p := l.build.progress()
	if p.State == IndexIdle {
		if _, ok := l.m.indexes.Peek(l.key); ok || l.sgState.opened.Load() || l.zcState.opened.Load() {
			p.State = IndexReady
		}
	}
	if p.State == IndexIdle && l.pub.current() {
		p.State = IndexPublished
	}
	p.Total = l.blob.Size()
	if p.State == IndexReady {
		// A ready index may have come from disk or the TOC with no pass, or
		// its pass may not have counted its last bytes yet: it is all done.
		p.Done = p.Total
	}
	return p
}
