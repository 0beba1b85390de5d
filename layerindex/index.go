package layerindex

import (
	"context"
	"errors"
	"io"
	"sort"
)

// layerIndex is everything one pass over a blob learns: the tar stream's
// size, restart points into it, and the tar entries.
type layerIndex struct {
	Format      Format
	TarSize     int64
	Spacing     int64
	Checkpoints []checkpoint // gzip: sorted by UOff, first at 0
	Frames      []zstdFrame  // zstd with several frames: sorted by UOff
	Tar         *Index       // nil if the stream is not a readable tar
	TarErr      string       // why Tar is nil
}

// checkpoint is a place a gzip stream can be resumed: at the start of a
// deflate block, with the 32 KiB of output before it.
type checkpoint struct {
	UOff   int64  // offset in the uncompressed tar stream
	CBit   int64  // bit offset of the deflate block in the blob
	Window []byte // the output before UOff, up to 32 KiB
}

// zstdFrame is where a zstd frame starts, stored and uncompressed.
type zstdFrame struct {
	COff, UOff int64
}

func (x *layerIndex) checkpointFor(off int64) checkpoint {
	i := sort.Search(len(x.Checkpoints), func(i int) bool { return x.Checkpoints[i].UOff > off })
	if i == 0 {
		return checkpoint{}
	}
	return x.Checkpoints[i-1]
}

func (x *layerIndex) frameFor(off int64) zstdFrame {
	i := sort.Search(len(x.Frames), func(i int) bool { return x.Frames[i].UOff > off })
	if i == 0 {
		return zstdFrame{}
	}
	return x.Frames[i-1]
}

// buildIndex makes one pass over the blob.
func (l *Layer) buildIndex(ctx context.Context) (*layerIndex, error) {
	f, err := l.Format(ctx)
	if err != nil {
		return nil, err
	}
	s, err := l.openStream(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if rs, ok := s.(*readerStream); ok {
		rs.onRead = func(n int64) { l.done.Add(n) }
	}
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := s.read(ctx, buf)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return &layerIndex{Format: f, TarSize: total}, nil
}
