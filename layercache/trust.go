package layercache

import (
	"bytes"
	_ "crypto/sha256" // the digests' hashes
	_ "crypto/sha512"
	"encoding"
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
//   - or the block states recorded by such a pass (kept on disk): the
//     blob hash's internal state at every block boundary, so block i is
//     checked by resuming the hash at state i over its bytes and comparing
//     with state i+1 (a match with other bytes would break the hash). Every
//     later fetch of a block and every unverified disk copy is vetted so.
//     The states come from the pass's one hash: no second hash per byte.
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

// blockStates are a blob hash's marshalled states at its block
// boundaries: [i] before block i, [nblocks] after the last (the digest).
type blockStates [][]byte

// check reports whether d is block i of the blob whose states they are.
func (st blockStates) check(alg digest.Algorithm, i int64, d []byte) bool {
	if i < 0 || i+1 >= int64(len(st)) {
		return false
	}
	h := alg.Hash()
	if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st[i]) != nil {
		return false
	}
	h.Write(d)
	got, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	return err == nil && bytes.Equal(got, st[i+1])
}

// resumable reports whether alg's hash can be stopped and resumed (the
// hashes of sha256 and sha512 can), which block states need.
func resumable(alg digest.Algorithm) bool {
	if !alg.Available() {
		return false
	}
	h := alg.Hash()
	_, m := h.(encoding.BinaryMarshaler)
	_, u := h.(encoding.BinaryUnmarshaler)
	return m && u
}

// mark returns h's state.
func mark(h hash.Hash) []byte {
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("layercache: marshal a %T: %v", h, err)) // resumable said it can
	}
	return st
}

// digestTrust is what is known of one digest in this Cache, whichever
// origin it was read from: its block states once some pass verified it.
type digestTrust struct {
	states atomic.Pointer[blockStates] // nil until verified
}

// blobTrust is the verification state of one cached blob (one blob.key:
// a host's copy of a digest, or a blob without a digest). Shared by every
// Reader of that key.
type blobTrust struct {
	want digest.Digest // "" when the Source declared none
	dt   *digestTrust  // nil when want is ""

	failed atomic.Pointer[error] // set once: every read fails with it

	mu      sync.Mutex
	h       hash.Hash   // whole-blob hash of the blocks [0, len(partial)-1)
	partial blockStates // the states so far; empty before the first block
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

// states returns the blob's verified block states, nil if not verified.
func (t *blobTrust) states() blockStates {
	if t.dt == nil {
		return nil
	}
	if p := t.dt.states.Load(); p != nil {
		return *p
	}
	return nil
}

// hashed is the number of blocks the in-order pass hashed; under t.mu.
func (t *blobTrust) hashedLocked() int64 { return max(int64(len(t.partial))-1, 0) }

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
// digest: a match records the block states (verified), a mismatch fails
// the blob. It returns the blob's failure, if any: the read must not be
// served then.
func (s *store) feed(b *blob, first int64, out [][]byte) error {
	t := b.trust
	if err := t.err(); err != nil {
		return err
	}
	if t.dt == nil || t.states() != nil {
		return nil
	}
	t.mu.Lock()
	next := t.hashedLocked()
	if next < first || next >= first+int64(len(out)) || t.states() != nil || t.err() != nil {
		t.mu.Unlock()
		return t.err()
	}
	if t.h == nil {
		t.h = t.want.Algorithm().Hash()
		t.partial = blockStates{mark(t.h)}
	}
	for j := next - first; j < int64(len(out)); j++ {
		t.h.Write(out[j])
		t.partial = append(t.partial, mark(t.h))
	}
	if t.hashedLocked() < b.nblocks {
		t.mu.Unlock()
		return nil
	}
	got := digest.NewDigest(t.want.Algorithm(), t.h)
	states := t.partial
	t.h, t.partial = nil, nil
	t.mu.Unlock()
	if got != t.want {
		return s.fail(b, fmt.Errorf("%w: %s served by %s hashes to %s", ErrDigestMismatch, t.want, b.host, got))
	}
	s.verified(b, states)
	return nil
}

// vet checks block i of b, just fetched or read from an unverified copy on
// disk, against its block states: the verified ones, or those an in-order
// pass recorded for a block it already hashed. A mismatch fails the blob.
func (s *store) vet(b *blob, i int64, d []byte) error {
	t := b.trust
	if err := t.err(); err != nil {
		return err
	}
	if t.dt == nil {
		return nil
	}
	st := t.states()
	if st == nil {
		t.mu.Lock()
		if i < t.hashedLocked() {
			st = t.partial[:i+2]
		}
		t.mu.Unlock()
	}
	if st == nil || st.check(t.want.Algorithm(), i, d) {
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

// verified records the block states of b, verified whole: later fetches
// are vetted against them and may be shared. With a disk tier they are
// stored, and b's host-keyed blocks that match move under the digest.
func (s *store) verified(b *blob, states blockStates) {
	s.trustMu.Lock()
	b.trust.dt.states.CompareAndSwap(nil, &states)
	s.trustMu.Unlock()
	if s.disk == nil {
		return
	}
	if err := s.disk.writeStates(b.digest, s.bs, bytes.Join(states, nil)); err != nil {
		s.log.WithError(err).Warnf("layercache: storing the block states of %s", b.digest)
	}
	if !b.shared() {
		return
	}
	s.trustMu.Lock()
	defer s.trustMu.Unlock()
	if s.closed {
		return // later reads move the blocks (store.load)
	}
	s.promoting.Add(1)
	go func() {
		defer s.promoting.Done()
		s.promote(b, states)
	}()
}

// promote moves b's host-keyed blocks that match their verified block
// states under the digest, and removes the rest. Cache.Close waits for it:
// it is the disk writes of a pass.
func (s *store) promote(b *blob, states blockStates) {
	for i := range b.nblocks {
		s.promoteBlock(b, i, states)
	}
}

// promoteBlock moves block i of b from b's key to the digest if it is
// there and matches its block states; a copy that does not is removed.
func (s *store) promoteBlock(b *blob, i int64, states blockStates) {
	if !s.disk.knowsBlock(b.key, s.bs, i) {
		return
	}
	d, err := s.disk.read(blockRel(b.key, s.bs, i), b.blockLen(i)) // not a hit: no reader asked
	if err == nil && states.check(b.trust.want.Algorithm(), i, d) {
		s.disk.writeBlock(b.digest, s.bs, i, d)
	}
	s.disk.removeBlock(b.key, s.bs, i)
}

// trustFor returns the verification state of key (one per key), its
// digest's block states loaded from disk when a pass stored them.
func (s *store) trustFor(key string, o blobio.Origin, nblocks int64) *blobTrust {
	s.trustMu.Lock()
	defer s.trustMu.Unlock()
	if t, ok := s.trusts[key]; ok {
		return t
	}
	t := &blobTrust{}
	if want, err := digest.Parse(o.Digest); err == nil && resumable(want.Algorithm()) {
		t.want = want
		dt, ok := s.digests[o.Digest]
		if !ok {
			dt = &digestTrust{}
			if states := s.loadStates(want, nblocks); states != nil {
				dt.states.Store(&states)
			}
			s.digests[o.Digest] = dt
		}
		t.dt = dt
	}
	s.trusts[key] = t
	return t
}

// loadStates reads the stored block states of dgst, nil if none (or not
// those of nblocks blocks, or not ending in the digest).
func (s *store) loadStates(dgst digest.Digest, nblocks int64) blockStates {
	if s.disk == nil || nblocks <= 0 {
		return nil
	}
	h := dgst.Algorithm().Hash()
	n := int64(len(mark(h)))
	data, err := s.disk.readStates(dgst.String(), s.bs, (nblocks+1)*n)
	if err != nil {
		return nil
	}
	states := make(blockStates, nblocks+1)
	for i := range states {
		states[i] = data[int64(i)*n : int64(i+1)*n : int64(i+1)*n]
	}
	if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(states[nblocks]) != nil || digest.NewDigest(dgst.Algorithm(), h) != dgst {
		return nil
	}
	return states
}
