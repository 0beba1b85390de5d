package layerindex

import (
	"context"
	"errors"
	"io"
)

// decoding reads the tar stream for one entry on a cursor of its own,
// restarting only at the last checkpoint before the entry's headers: every
// byte of the entry then comes out of the same decode, the one its check
// read, whichever cursor the pool hands out.
type decoding struct {
	shadow *Layer      // a Layer of its own, so no cursor is shared with another decode
	owner  *TarReader  // marks the cursors streaming: no decoded span is kept
	idx    *layerIndex // the published index with its checkpoints cut at the headers
}

// lastCheckpointAt returns the number of the last of cps at or before off,
// -1 if there is none.
func lastCheckpointAt(cps []checkpoint, off int64) int {
	i := -1
	for i+1 < len(cps) && cps[i+1].UOff <= off {
		i++
	}
	return i
}

// readAt reads the tar stream at off, with TarReadAt's contract.
func (d *decoding) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	pool := d.shadow.m.cursors
	c, err := pool.take(ctx, d.shadow, off, d.owner)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	n, err := c.readAt(ctx, p, off, d.idx)
	c.mu.Unlock()
	pool.put(c)
	return n, err
}

// reader reads the tar stream [from, to) in order.
func (d *decoding) reader(ctx context.Context, from, to int64) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		if from >= to {
			return 0, io.EOF
		}
		if int64(len(p)) > to-from {
			p = p[:to-from]
		}
		n, err := d.readAt(ctx, p, from)
		from += int64(n)
		if errors.Is(err, io.EOF) && n > 0 {
			err = nil
		}
		return n, err
	})
}
