package layercache

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/blobio"
)

// Trust model (docs/design/layercache.md tells why): a block is shared
// across origins (another registry, another mount, a later session, under
// the bare digest on disk) only once verified, by
//   - the whole-blob hash of an in-order pass: every read hands its blocks
//     to feed, which hashes the blocks that continue the blob from the
//     start, whatever tier they came from;
//   - or the per-block digests recorded by such a pass (kept on disk), which
//     every later fetch of a block and every unverified disk copy is vetted
//     against.
// Until then a blob's blocks are keyed by its origin's host (blob.key) and
// never written under the digest. A pass whose hash does not match fails
// the blob: its blocks are dropped from memory and disk, one line is
// logged, and every later read of it in this Cache fails.

var (
	// ErrDigestMismatch: the bytes a Source served do not hash to the
	// digest it declared; the blob's blocks are dropped and its reads fail.
	ErrDigestMismatch = errors.New("layercache: blob does not match its digest")
	// ErrUnverifiable: Options.Verify is VerifyStrict and the blob declares
	// no digest (a v1 layer), so it can never be verified.
	ErrUnverifiable = errors.New("layercache: blob has no content digest to verify")
)

// blockSum is a block digest: the SHA-256 of one block's bytes.
type blockSum = [sha256.Size]byte

// digestTrust is what is known of one digest in this Cache, whichever
// origin it was read from: its block digests once some pass verified it.
type digestTrust struct {
	sums atomic.Pointer[[]blockSum] // nil until verified
}

// blobTrust is the verification state of one cached blob (one blob.key:
// a host's copy of a digest, or a blob without a digest). Shared by every
// Reader of that key.
type blobTrust struct {
	want digest.Digest // "" when the Source declared none
	dt   *digestTrust  // nil when want is ""

	failed atomic.Pointer[error] // set once: every read fails with it

	mu      sync.Mutex
	h       hash.Hash  // whole-blob hash of blocks [0, len(partial))
	partial []blockSum // block digests of the blocks hashed so far
	pass    *verifyPass
}

// verifyPass is one strict-mode pass over a blob; done is closed when it
// ended, err says how.
type verifyPass struct {
	done chan struct{}
	err  error
}

// KeyOf is the key the cache stores src's bytes under until they are
// verified: src.Key() for local data (no Origin.Host), else qualified by
// the host. Whatever is derived from src's bytes before verification
// belongs under this key, not the bare digest.
func KeyOf(src blobio.Source) string { return cacheKey(src, src.Origin()) }

// cacheKey is the key a blob's blocks are stored under
// until verified: the Source's Key for local data, else qualified by the
// host it came from, so no other origin ever reads them.
func cacheKey(src blobio.Source, o blobio.Origin) string {
	if o.Host == "" {
		return src.Key()
	}
	return "unverified:" + o.Host + "/" + src.Key()
}

// sums returns the blob's verified block digests, nil if not verified.
func (t *blobTrust) sums() []blockSum {
	if t.dt == nil {
		return nil
	}
	if p := t.dt.sums.Load(); p != nil {
		return *p
	}
	return nil
}

// err is the failure that ended the blob, nil while it is good.
func (t *blobTrust) err() error {
	if p := t.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// shared reports whether b's verified blocks live under a key of their own
// (the digest), apart from the host-keyed unverified ones.
func (b *blob) shared() bool { return b.digest != "" && b.digest != b.key }

// feed hashes the blocks of out (block first+j in out[j]) that continue
// b's in-order pass, and at the blob's end compares the hash with its
// digest: a match records the block digests (verified), a mismatch fails
// the blob. It returns the blob's failure, if any: the read must not be
// served then.
func (s *store) feed(b *blob, first int64, out [][]byte) error {
	t := b.trust
	if err := t.err(); err != nil {
		return err
	}
	if t.dt == nil || t.sums() != nil {
		return nil
	}
	t.mu.Lock()
	next := int64(len(t.partial))
	if next < first || next >= first+int64(len(out)) || t.sums() != nil || t.err() != nil {
		t.mu.Unlock()
		return t.err()
	}
	if t.h == nil {
		t.h = t.want.Algorithm().Hash()
	}
	for j := next - first; j < int64(len(out)); j++ {
		t.h.Write(out[j])
		t.partial = append(t.partial, sha256.Sum256(out[j]))
	}
	if int64(len(t.partial)) < b.nblocks {
		t.mu.Unlock()
		return nil
	}
	got := digest.NewDigest(t.want.Algorithm(), t.h)
	sums := t.partial
	t.h, t.partial = nil, nil
	t.mu.Unlock()
	if got != t.want {
		return s.fail(b, fmt.Errorf("%w: %s served by %s hashes to %s", ErrDigestMismatch, t.want, b.host, got))
	}
	s.verified(b, sums)
	return nil
}

// vet checks block i of b, just fetched or read from an unverified copy on
// disk, against its block digest: the verified one, or the one an in-order
// pass recorded for a block it already hashed. A mismatch fails the blob.
func (s *store) vet(b *blob, i int64, d []byte) error {
	t := b.trust
	if err := t.err(); err != nil {
		return err
	}
	if t.dt == nil {
		return nil
	}
	want, ok := blockSum{}, false
	if sums := t.sums(); sums != nil {
		want, ok = sums[i], true
	} else {
		t.mu.Lock()
		if i < int64(len(t.partial)) {
			want, ok = t.partial[i], true
		}
		t.mu.Unlock()
	}
	if !ok || sha256.Sum256(d) == want {
		return nil
	}
	return s.fail(b, fmt.Errorf("%w: block %d of %s served by %s differs from the bytes verified before", ErrDigestMismatch, i, t.want, b.host))
}

// fail ends b for good: the first failure is logged once, every block of
// b's key is dropped from memory and disk (the verified copy under the
// digest, if any, is the right bytes and stays), and every later read of b
// returns the error.
func (s *store) fail(b *blob, err error) error {
	t := b.trust
	if !t.failed.CompareAndSwap(nil, &err) {
		return t.err()
	}
	s.log.WithError(err).Errorf("layercache: dropping every cached block of %s; its reads fail from now on", b.key)
	if s.mem != nil {
		for i := range b.nblocks {
			s.mem.remove(b.block(i))
		}
	}
	if s.disk != nil {
		for i := range b.nblocks {
			s.disk.removeBlock(b.key, s.bs, i)
		}
	}
	return err
}

// verified records the block digests of b, verified whole: later fetches
// are vetted against them and may be shared. With a disk tier they are
// stored, and b's host-keyed blocks that match move under the digest.
func (s *store) verified(b *blob, sums []blockSum) {
	s.trustMu.Lock()
	b.trust.dt.sums.CompareAndSwap(nil, &sums)
	s.trustMu.Unlock()
	if s.disk == nil {
		return
	}
	data := make([]byte, 0, len(sums)*sha256.Size)
	for _, sum := range sums {
		data = append(data, sum[:]...)
	}
	if err := s.disk.writeSums(b.digest, s.bs, data); err != nil {
		s.log.WithError(err).Warnf("layercache: storing the block digests of %s", b.digest)
	}
	if !b.shared() {
		return
	}
	s.promoting.Add(1)
	go func() {
		defer s.promoting.Done()
		s.promote(b, sums)
	}()
}

// promote moves b's host-keyed blocks that match their verified block
// digest under the digest, and removes the rest. Cache.Close waits for it:
// it is the disk writes of a pass.
func (s *store) promote(b *blob, sums []blockSum) {
	for i := range b.nblocks {
		s.promoteBlock(b, i, sums)
	}
}

// promoteBlock moves block i of b from b's key to the digest if it is
// there and matches its block digest; a copy that does not is removed.
func (s *store) promoteBlock(b *blob, i int64, sums []blockSum) {
	if !s.disk.knowsBlock(b.key, s.bs, i) {
		return
	}
	d, err := s.disk.read(blockRel(b.key, s.bs, i), b.blockLen(i)) // not a hit: no reader asked
	if err == nil && sha256.Sum256(d) == sums[i] {
		s.disk.writeBlock(b.digest, s.bs, i, d)
	}
	s.disk.removeBlock(b.key, s.bs, i)
}

// trustFor returns the verification state of key (one per key), its
// digest's block digests loaded from disk when a pass stored them.
func (s *store) trustFor(key string, o blobio.Origin, nblocks int64) *blobTrust {
	s.trustMu.Lock()
	defer s.trustMu.Unlock()
	if t, ok := s.trusts[key]; ok {
		return t
	}
	t := &blobTrust{}
	if want, err := digest.Parse(o.Digest); err == nil && want.Algorithm().Available() {
		t.want = want
		dt, ok := s.digests[o.Digest]
		if !ok {
			dt = &digestTrust{}
			if sums := s.loadSums(o.Digest, nblocks); sums != nil {
				dt.sums.Store(&sums)
			}
			s.digests[o.Digest] = dt
		}
		t.dt = dt
	}
	s.trusts[key] = t
	return t
}

// loadSums reads the stored block digests of dgst, nil if none (or not
// nblocks of them).
func (s *store) loadSums(dgst string, nblocks int64) []blockSum {
	if s.disk == nil || nblocks <= 0 {
		return nil
	}
	data, err := s.disk.readSums(dgst, s.bs, nblocks*sha256.Size)
	if err != nil {
		return nil
	}
	sums := make([]blockSum, nblocks)
	for i := range sums {
		copy(sums[i][:], data[i*sha256.Size:])
	}
	return sums
}
