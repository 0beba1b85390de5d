package layercache

import (
	"context"
	"fmt"
)

// strict reports whether r serves only verified blobs.
func (r *Reader) strict() bool {
	return r.cache.opts.Verify == VerifyStrict && !r.pass && r.b.host != ""
}

// awaitVerified returns at once unless r is strict and its blob is not
// verified yet: then it starts (or joins) the blob's verification pass and
// waits for it, or for ctx.
func (r *Reader) awaitVerified(ctx context.Context) error {
	if !r.strict() {
		return nil
	}
	t := r.b.trust
	if t.states() != nil {
		return nil
	}
	if t.dt == nil {
		return fmt.Errorf("read %s: %w (--verify=strict)", r.b.key, ErrUnverifiable)
	}
	t.mu.Lock()
	p := t.pass
	if p == nil {
		p = &verifyPass{done: make(chan struct{})}
		t.pass = p
		c, b := r.cache, r.b
		go func() {
			p.err = c.verifyPass(b)
			t.mu.Lock()
			t.pass = nil // a failed pass is tried again by the next read
			t.mu.Unlock()
			close(p.done)
		}()
	}
	t.mu.Unlock()
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
		if err := t.err(); err != nil {
			return err
		}
		if t.states() == nil {
			return fmt.Errorf("read %s: pass ended unverified: %w", r.b.key, ErrDigestMismatch)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verifyPass reads b in order from the first block its hash has
// not covered to the end, through a Reader of its own, so that feed hashes
// every block: the blob ends verified or failed. It runs under the Cache's
// life, not a caller's: readers that stop waiting do not stop it.
func (c *Cache) verifyPass(b *blob) error {
	r := c.OpenWith(b.src, OpenOptions{Sequential: true})
	r.pass = true
	defer r.Close()
	t := b.trust
	t.mu.Lock()
	next := t.hashedLocked()
	t.mu.Unlock()
	step := c.opts.BlockSize * int64(max(c.opts.MaxFetchBlocks, 1))
	for off := next * c.opts.BlockSize; off < b.size; off += step {
		_, release, err := r.Slices(r.ctx, off, int(min(step, b.size-off)))
		release()
		if err != nil && t.states() == nil {
			return fmt.Errorf("verify %s: %w", b.key, err)
		}
	}
	return nil
}
