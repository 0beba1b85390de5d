package layerindex

import "context"

func (l *Layer) openGzipCheckpoint(ctx context.Context, idx *layerIndex, off int64) (stream, error) {
	return l.openGzipStart(ctx)
}
