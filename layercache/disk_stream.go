package layercache

// A disk stream is how a sequential reader reads ahead through blocks the
// disk tier holds: a stream (stream.go) whose blocks come from the disk
// tier instead of the Source. It claims blocks as the reader's window
// reaches them, reads each into a recycled buffer (bufpool.go), verifies it
// and publishes it, and its blocks are consumed and dropped like a network
// stream's: they stay out of the memory LRU.
//
// Reading every block into new memory, as a flight does for the memory LRU,
// costs a page fault per 4 KiB on first touch: on a virtual machine that
// made a re-read from the disk tier run at a few hundred MiB/s, however
// fast the files came from the page cache. A disk stream touches no new
// memory once the pool is warm.
//
// Its span is the run of blocks the disk tier's index knows, from where the
// reader's readahead found the first one. It stops, successfully, at the
// first block held elsewhere (memory, a reader, another fetch) or that
// turns out missing or bad on disk (a bad file is removed, as on every
// disk read): whoever waits for that block then fetches it the usual way,
// and the reader's readahead goes on from there.

// startDiskStreamLocked registers a disk stream of blob blocks from i on
// for r, which the caller found in the disk tier's index, and returns it;
// the caller starts it with go c.runFlight(f) after unlocking.
func (r *Reader) startDiskStreamLocked(i int64, g *getOpts) *flight {
	c := r.c
	n := 1
	for last := min(r.b.nblocks, i+maxStreamBlocks); i+int64(n) < last; n++ {
		j := i + int64(n)
		if c.heldLocked(r, j) || !c.disk.knowsBlock(r.b.key, c.bs, j) {
			break
		}
	}
	return r.registerStreamLocked(i, n, g, true)
}

// heldLocked reports whether block i of r's blob is in memory, with r, or
// being fetched: present other than on disk.
func (c *Cache) heldLocked(r *Reader, i int64) bool {
	k := blockKey{r.b.id, i}
	return c.inflight[k] != nil || c.memContains(k) || r.privateHas(i)
}

// diskStreamBlocks reads the blocks of disk stream f in order, claiming
// each first, and returns the blob index of the first block it did not
// publish.
func (c *Cache) diskStreamBlocks(f *flight) (stop int64) {
	b := f.b
	var pool *bufPool
	if f.bufs != nil {
		pool = poolFor(int(c.bs))
	}
	for j := 0; j < f.n; j++ {
		if j > 0 && !c.claim(f.parent, f, j) {
			return f.first + int64(j)
		}
		i := f.first + int64(j)
		bb, blk := c.streamBuffer(f, pool, j)
		if !c.disk.readBlockInto(b.key, c.bs, i, blk) {
			if bb != nil {
				bb.release()
			}
			return i
		}
		c.mu.Lock()
		c.publishStreamLocked(f, j, bb, blk)
		c.dropBehindLocked(f)
		c.mu.Unlock()
	}
	return f.first + int64(f.n)
}
