package registrytest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/regfs/regfs/tarsum"
)

// V1NormalizeRepo adds "library/" to one-component names, as docker's v1
// client and registry do.
func V1NormalizeRepo(name string) string {
	name = strings.Trim(name, "/")
	if !strings.Contains(name, "/") {
		return "library/" + name
	}
	return name
}

// V1ImageID is the deterministic, random-looking v1 image ID the server
// gives a layer on top of parent (empty for a base layer).
func V1ImageID(parent string, layer []byte) string {
	ld := sha256.Sum256(layer)
	h := sha256.New()
	h.Write([]byte("regfs v1 image id\x00"))
	h.Write([]byte(parent))
	h.Write([]byte{0})
	h.Write(ld[:])
	return hex.EncodeToString(h.Sum(nil))
}

// AddImage adds the image made of layers (base first) to repo, tagged tag
// (no tag when tag is ""), and returns its images base first; the last one is
// the image the tag names. Layers shared with images already added (same
// bytes on the same parent) get the same IDs.
func (s *V1Server) AddImage(repo, tag string, layers ...V1LayerSpec) ([]*V1Image, error) {
	if len(layers) == 0 {
		return nil, errors.New("v1 add image: no layers")
	}
	repo = V1NormalizeRepo(repo)
	var out []*V1Image
	parent := ""
	for i, l := range layers {
		id := V1ImageID(parent, l.Tar)
		s.mu.Lock()
		img, ok := s.images[id]
		s.mu.Unlock()
		if !ok {
			var err error
			img, err = newV1Image(id, parent, i, l)
			if err != nil {
				return nil, fmt.Errorf("v1 add image %s layer %d: %w", repo, i, err)
			}
		}
		out = append(out, img)
		parent = id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repoLocked(repo)
	for _, img := range out {
		s.images[img.ID] = img
		r.images[img.ID] = true
	}
	if tag != "" {
		r.tags[tag] = out[len(out)-1].ID
	}
	return out, nil
}

// Tag points tag of repo at an image the server already holds.
func (s *V1Server) Tag(repo, tag, id string) error {
	repo = V1NormalizeRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[id]; !ok {
		return fmt.Errorf("v1 tag %s:%s: unknown image %s", repo, tag, id)
	}
	r := s.repoLocked(repo)
	for cur := id; cur != ""; cur = s.images[cur].Parent {
		r.images[cur] = true
	}
	r.tags[tag] = id
	return nil
}

// SetDescription sets the description search shows for repo (created empty
// if it does not exist yet).
func (s *V1Server) SetDescription(repo, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repoLocked(V1NormalizeRepo(repo)).description = desc
}

// Image returns the image with id, or nil.
func (s *V1Server) Image(id string) *V1Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.images[id]
}

func (s *V1Server) repoLocked(name string) *v1Repo {
	r, ok := s.repos[name]
	if !ok {
		r = &v1Repo{name: name, tags: map[string]string{}, images: map[string]bool{}}
		s.repos[name] = r
	}
	return r
}

func newV1Image(id, parent string, pos int, l V1LayerSpec) (*V1Image, error) {
	created := l.Created
	if created.IsZero() {
		created = time.Date(2014, 6, 1, 12, 0, pos, 0, time.UTC)
	}
	cmd := l.CreatedBy
	if cmd == "" {
		cmd = fmt.Sprintf("#(nop) ADD layer %d", pos)
	}
	raw, err := v1Uncompressed(l.Tar)
	if err != nil {
		return nil, err
	}
	js := map[string]any{
		"id":             id,
		"created":        created.Format(time.RFC3339Nano),
		"container":      V1ImageID("container", []byte(id)),
		"docker_version": "1.3.0",
		"architecture":   "amd64",
		"os":             "linux",
		"Size":           len(raw),
		"container_config": map[string]any{
			"Cmd": []string{"/bin/sh", "-c", cmd},
		},
	}
	if parent != "" {
		js["parent"] = parent
	}
	jb, err := json.Marshal(js)
	if err != nil {
		return nil, err
	}
	checksum, err := v1TarSum(l.Tar, jb)
	if err != nil {
		return nil, err
	}
	ph := sha256.New()
	ph.Write(jb)
	ph.Write([]byte{'\n'})
	ph.Write(l.Tar)
	return &V1Image{
		ID:              id,
		Parent:          parent,
		JSON:            jb,
		Layer:           l.Tar,
		Checksum:        checksum,
		PayloadChecksum: "sha256:" + hex.EncodeToString(ph.Sum(nil)),
		Created:         created,
	}, nil
}

// v1Uncompressed returns the tar inside b: b itself, or b gunzipped.
func v1Uncompressed(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gunzip layer: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("gunzip layer: %w", err)
	}
	return raw, nil
}

// v1TarSum is the layer's tarsum (Version0, SHA256, the image JSON as
// extra), as docker's v1 push computed it for the index's checksum list.
// Sums are cached by content: tests build the same fixtures many times.
func v1TarSum(layer, js []byte) (string, error) {
	h := sha256.New()
	h.Write(layer)
	h.Write([]byte{0})
	h.Write(js)
	key := string(h.Sum(nil))
	if sum, ok := v1TarSums.Load(key); ok {
		return sum.(string), nil
	}
	sum, err := tarsum.Compute(context.Background(), bytes.NewReader(layer), tarsum.Options{Version: tarsum.Version0}, js)
	if err != nil {
		return "", fmt.Errorf("tarsum: %w", err)
	}
	v1TarSums.Store(key, sum)
	return sum, nil
}

var v1TarSums sync.Map // sha256(layer, 0, json) → tarsum
