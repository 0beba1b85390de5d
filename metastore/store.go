package metastore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry"
)

// Subdirectories of a store's directory.
const (
	contentDir = "content" // content/<algorithm>/<hex>
	refsDir    = "refs"    // refs/<sha256 of the reference's identity>.json
)

// maxContent bounds one stored file: the largest config registry reads.
const maxContent = 64 << 20

// Ref is one answer a registry gave about a name: Tag's digest (an index or
// a manifest) at Time, or, with Tag empty, a repo@Digest resolved at Time.
type Ref struct {
	Registry   string        `json:"registry"`
	Repository string        `json:"repository"`
	Tag        string        `json:"tag,omitempty"`
	Digest     digest.Digest `json:"digest"`
	Time       time.Time     `json:"time"`
}

// Name is the reference as users write it: host/repo:tag or host/repo@digest.
func (r Ref) Name() string {
	if r.Tag != "" {
		return r.Registry + "/" + r.Repository + ":" + r.Tag
	}
	return r.Registry + "/" + r.Repository + "@" + r.Digest.String()
}

// Store is the metadata of one directory, or of memory alone (Memory).
// Safe for concurrent use, and for several processes sharing a directory:
// every file is written whole under a temporary name and renamed.
type Store struct {
	dir string // "" for memory only
	log logrus.FieldLogger

	mu      sync.Mutex               // guards the memory maps
	content map[digest.Digest][]byte // memory only
	refs    map[string]Ref           // memory only, by refKey
}

var _ registry.ContentStore = (*Store)(nil)

// Open returns the store in dir, creating it if needed.
func Open(dir string, log logrus.FieldLogger) (*Store, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	for _, sub := range []string{contentDir, refsDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("metadata store: %w", err)
		}
	}
	return &Store{dir: dir, log: log}, nil
}

// Memory returns a store that keeps everything in memory for the process's
// life (a mount without --cache-dir). It grows with every image resolved.
func Memory() *Store {
	return &Store{log: logrus.StandardLogger(), content: map[digest.Digest][]byte{}, refs: map[string]Ref{}}
}

// Dir is the store's directory, "" for a memory store.
func (s *Store) Dir() string { return s.dir }

func (s *Store) contentPath(d digest.Digest) string {
	return filepath.Join(s.dir, contentDir, string(d.Algorithm()), d.Encoded())
}

// Content returns the bytes stored under d if they hash to d. A file that
// does not is removed (and logged): it is never served.
func (s *Store) Content(d digest.Digest) ([]byte, bool) {
	if d.Validate() != nil {
		return nil, false
	}
	if s.dir == "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		b, ok := s.content[d]
		return b, ok
	}
	p := s.contentPath(d)
	b, err := readBounded(p, maxContent)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.WithError(err).Debugf("metadata store: read %s", d)
		}
		return nil, false
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		s.log.Warnf("metadata store: %s holds content that hashes to %s, not its name: removed, not served", p, got)
		os.Remove(p)
		return nil, false
	}
	return b, true
}

// PutContent stores b under d if b hashes to d (anything else is dropped).
func (s *Store) PutContent(d digest.Digest, b []byte) {
	if d.Validate() != nil || len(b) > maxContent || d.Algorithm().FromBytes(b) != d {
		return
	}
	if s.dir == "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.content[d] = b
		return
	}
	p := s.contentPath(d)
	if _, err := os.Stat(p); err == nil {
		return // content-addressed: what is there is the same (Content checks)
	}
	if err := writeFile(p, b); err != nil {
		s.log.WithError(err).Debugf("metadata store: keep %s", d)
	}
}

// refKey is a reference's identity: registry, repository, and tag (or, for
// a digest reference, the digest).
func refKey(registryHost, repo, tagOrDigest string) string {
	return registryHost + "\x00" + repo + "\x00" + tagOrDigest
}

func (r Ref) key() string {
	if r.Tag != "" {
		return refKey(r.Registry, r.Repository, r.Tag)
	}
	return refKey(r.Registry, r.Repository, r.Digest.String())
}

func (s *Store) refPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(s.dir, refsDir, hex.EncodeToString(sum[:])+".json")
}

// PutRef records r, replacing the earlier answer for the same reference.
func (s *Store) PutRef(r Ref) {
	if r.Digest.Validate() != nil || r.Registry == "" || r.Repository == "" {
		return
	}
	if s.dir == "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.refs[r.key()] = r
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		err = writeFile(s.refPath(r.key()), b)
	}
	if err != nil {
		s.log.WithError(err).Debugf("metadata store: keep %s", r.Name())
	}
}

// Tag returns the last recorded answer for registryHost/repo:tag.
func (s *Store) Tag(registryHost, repo, tag string) (Ref, bool) {
	return s.ref(refKey(registryHost, repo, tag))
}

// HasDigestRef reports whether registryHost/repo@d has been recorded.
func (s *Store) HasDigestRef(registryHost, repo string, d digest.Digest) bool {
	_, ok := s.ref(refKey(registryHost, repo, d.String()))
	return ok
}

func (s *Store) ref(key string) (Ref, bool) {
	if s.dir == "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		r, ok := s.refs[key]
		return r, ok
	}
	r, err := readRef(s.refPath(key))
	if err != nil || r.key() != key {
		return Ref{}, false
	}
	return r, true
}

func readRef(p string) (Ref, error) {
	var r Ref
	b, err := readBounded(p, 64<<10)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", p, err)
	}
	if err := r.Digest.Validate(); err != nil {
		return r, fmt.Errorf("%s: %w", p, err)
	}
	return r, nil
}

// Refs lists every recorded reference, sorted by name. Unreadable files
// are skipped.
func (s *Store) Refs() ([]Ref, error) {
	var out []Ref
	if s.dir == "" {
		s.mu.Lock()
		for _, r := range s.refs {
			out = append(out, r)
		}
		s.mu.Unlock()
	} else {
		ents, err := os.ReadDir(filepath.Join(s.dir, refsDir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("metadata store: %w", err)
		}
		for _, e := range ents {
			if filepath.Ext(e.Name()) != ".json" {
				continue
			}
			r, err := readRef(filepath.Join(s.dir, refsDir, e.Name()))
			if err != nil {
				s.log.WithError(err).Debug("metadata store: skipping a reference")
				continue
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// readBounded reads a file of at most limit bytes.
func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", p, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return b, nil
}

// writeFile writes b to p through a temporary file in p's directory and a
// rename, so a reader sees the old file or the whole new one.
func writeFile(p string, b []byte) error {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
