package metastore

import (
	"encoding/json"
	"sort"

	"github.com/opencontainers/go-digest"
)

// descriptorLists are the parts of an index or manifest that name other
// content: an index's manifests, a manifest's config and layers.
type descriptorLists struct {
	Manifests []struct {
		Digest digest.Digest `json:"digest"`
	} `json:"manifests"`
	Config *struct {
		Digest digest.Digest `json:"digest"`
	} `json:"config"`
	Layers []struct {
		Digest digest.Digest `json:"digest"`
	} `json:"layers"`
}

// BlobImages maps each blob digest (layers and configs) that a recorded
// reference reaches through stored manifests to the names of those
// references (Ref.Name), sorted. An index reaches the blobs of each of its
// manifests that is stored. Blobs of images never resolved through this
// store are absent.
func (s *Store) BlobImages() (map[string][]string, error) {
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	sets := map[string]map[string]bool{}
	add := func(d digest.Digest, name string) {
		k := d.String()
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][name] = true
	}
	for _, r := range refs {
		name := r.Name()
		todo := []digest.Digest{r.Digest}
		seen := map[digest.Digest]bool{}
		for len(todo) > 0 {
			d := todo[0]
			todo = todo[1:]
			if seen[d] {
				continue
			}
			seen[d] = true
			b, ok := s.Content(d)
			if !ok {
				continue
			}
			var dl descriptorLists
			if json.Unmarshal(b, &dl) != nil {
				continue
			}
			for _, m := range dl.Manifests {
				todo = append(todo, m.Digest)
			}
			if dl.Config != nil && dl.Config.Digest != "" {
				add(dl.Config.Digest, name)
			}
			for _, l := range dl.Layers {
				add(l.Digest, name)
			}
		}
	}
	out := make(map[string][]string, len(sets))
	for k, names := range sets {
		for n := range names {
			out[k] = append(out[k], n)
		}
		sort.Strings(out[k])
	}
	return out, nil
}
