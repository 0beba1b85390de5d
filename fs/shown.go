package fs

import (
	"math"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// shownImage is an image the mount has shown a directory of, for
// .regfs/stats: the first mount path it was reached by, and the image.
type shownImage struct {
	path string
	img  *registry.Image
}

// noteImage records that img (identity id) is shown at mount path mpath.
// The first time, an index with no manifest for the mount's platform gets
// one log line: its directory then shows only index.json and platforms/,
// which would otherwise look like an image with nothing in it.
func (t *tree) noteImage(mpath, id string, img *registry.Image) {
	if _, seen := t.shown.LoadOrStore(id, &shownImage{path: strings.TrimPrefix(mpath, "/"), img: img}); seen {
		return
	}
	if img.Index != nil && img.Manifest == nil {
		var have []string
		for _, p := range img.Platforms {
			have = append(have, p.Platform.String())
		}
		t.log.WithFields(logrus.Fields{"image": strings.TrimPrefix(mpath, "/"), "platform": t.platform.String(), "index_platforms": strings.Join(have, " ")}).
			Warn("the image's index has no manifest for this --platform: its directory shows only index.json and platforms/ (open platforms/<os>-<arch>/, or mount with --platform one of index_platforms)")
	}
}

// imageStats is one image in .regfs/stats.
type imageStats struct {
	Path           string       `json:"path"`
	Digest         string       `json:"digest,omitempty"` // manifest digest (v2)
	Size           int64        `json:"size"`             // stored size of its layers
	FetchedBytes   int64        `json:"fetched_bytes"`
	FetchedPercent float64      `json:"fetched_percent"`
	Layers         []layerStats `json:"layers"`
}

// layerStats is one layer in .regfs/stats. FetchedBytes are the bytes of
// the blob this mount received from the registry (a block evicted and
// fetched again counts twice: FetchedPercent is capped at 100); blocks
// found in the disk cache are not fetched.
type layerStats struct {
	ID             string  `json:"id"`
	Digest         string  `json:"digest,omitempty"`
	Size           int64   `json:"size"` // stored (compressed) size; -1 if unknown
	FetchedBytes   int64   `json:"fetched_bytes"`
	FetchedPercent float64 `json:"fetched_percent"`
	IndexState     string  `json:"index_state"`        // idle, building, ready, failed: <why>
	TarSize        *int64  `json:"tar_size,omitempty"` // layer.tar's size, once known
}

// percent is part of whole in percent, to 0.1, at most 100.
func percent(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return min(100, math.Round(1000*float64(part)/float64(whole))/10)
}

// blobKey is the key the registry client gives layer l's blob (see
// registry.Client.OpenBlob), without opening it.
func (t *tree) blobKey(l registry.Layer) string {
	if l.Digest != "" {
		return l.Digest.String()
	}
	return "v1:" + t.host + "/" + l.ID
}

// imagesStats are the images shown so far, by path; no I/O.
func (t *tree) imagesStats(progress map[string]layerindex.Progress) []imageStats {
	var out []imageStats
	t.shown.Range(func(_, v any) bool {
		si := v.(*shownImage)
		st := imageStats{Path: si.path, Digest: si.img.ManifestDigest.String(), Layers: []layerStats{}}
		for _, l := range si.img.Layers {
			key := t.blobKey(l)
			ls := layerStats{ID: l.ID, Digest: l.Digest.String(), Size: l.Size, IndexState: string(layerindex.IndexIdle)}
			if c := t.s.Cache(); c != nil {
				ls.FetchedBytes = c.BlobFetched(key)
			}
			ls.FetchedPercent = percent(ls.FetchedBytes, l.Size)
			if p, ok := progress[key]; ok {
				ls.IndexState = string(p.State)
				if p.State == layerindex.IndexFailed {
					ls.IndexState += ": " + p.Err
				}
			}
			if size, ok := t.layerRef(si.img.Repository, l).knownTarSize(); ok {
				ls.TarSize = &size
			}
			st.Size += max(l.Size, 0)
			st.FetchedBytes += ls.FetchedBytes
			st.Layers = append(st.Layers, ls)
		}
		st.FetchedPercent = percent(st.FetchedBytes, st.Size)
		out = append(out, st)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
