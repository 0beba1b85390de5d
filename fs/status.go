package fs

import (
	"context"
	"encoding/json"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const statusDirName = ".regfs"

// Status is what the hidden .regfs/ directory at the mount root shows.
type Status struct {
	// Version is .regfs/version (one line).
	Version string
	// Config is .regfs/config, as indented JSON: the effective flags, with
	// no secrets.
	Config any
	// Stats is called on every open of .regfs/stats; its result is shown as
	// indented JSON, with the layer index builds added under
	// "index_builds" (per blob key: state, done, total) and, once the mount
	// has shown an image directory, the images under "images" (per image
	// and layer: size, fetched bytes and percent, index state). A result
	// that is not a JSON object is shown under "stats".
	Stats func() any
}

// statsJSON is .regfs/stats: the caller's stats and the index builds.
func (t *tree) statsJSON() []byte {
	var v any
	if t.status.Stats != nil {
		v = t.status.Stats()
	}
	obj := map[string]json.RawMessage{}
	if v != nil {
		raw, err := json.Marshal(v)
		if err != nil {
			return jsonBytes(map[string]string{"error": err.Error()})
		}
		if json.Unmarshal(raw, &obj) != nil || obj == nil {
			obj = map[string]json.RawMessage{"stats": raw}
		}
	}
	progress := t.s.Indexes().Progress()
	builds, err := json.Marshal(progress)
	if err != nil {
		return jsonBytes(map[string]string{"error": err.Error()})
	}
	obj["index_builds"] = builds
	if shown := t.imagesStats(progress); len(shown) > 0 {
		images, err := json.Marshal(shown)
		if err != nil {
			return jsonBytes(map[string]string{"error": err.Error()})
		}
		obj["images"] = images
	}
	return jsonBytes(obj)
}

func (t *tree) statusChild() child {
	return child{
		name: statusDirName, mode: fuse.S_IFDIR, ino: inoOf(t.host, "status"), entryTTL: immutableTTL,
		make: func() node {
			d := &statusDir{}
			d.fixedDir = fixedDir{t: t, mtime: t.started, list: d.children}
			return d
		},
	}
}

// statusDir is .regfs/: stats, version, config.
type statusDir struct {
	fixedDir
}

var (
	_ = (node)((*statusDir)(nil))
	_ = (gofs.NodeLookuper)((*statusDir)(nil))
	_ = (gofs.NodeReaddirer)((*statusDir)(nil))
	_ = (gofs.NodeGetattrer)((*statusDir)(nil))
)

func jsonBytes(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	return append(b, '\n')
}

func (n *statusDir) children() []child {
	t, s := n.t, n.t.status
	file := func(name string, content func() []byte) child {
		return child{
			name: name, mode: fuse.S_IFREG, ino: inoOf(t.host, "status", name), entryTTL: immutableTTL,
			make: func() node { return &liveFile{content: content, mtime: t.started} },
		}
	}
	cs := []child{
		file("version", func() []byte { return []byte(s.Version + "\n") }),
		file("config", func() []byte { return jsonBytes(s.Config) }),
	}
	cs = append(cs, file("stats", t.statsJSON))
	return cs
}

// liveFile is content made afresh at each open, served in direct-I/O mode
// (its size changes, so the page cache must not hold it; mmap is not
// supported). stat shows the size of the content right now.
type liveFile struct {
	gofs.Inode
	noXattrs
	content func() []byte
	mtime   time.Time
}

var (
	_ = (node)((*liveFile)(nil))
	_ = (gofs.NodeOpener)((*liveFile)(nil))
	_ = (gofs.NodeGetattrer)((*liveFile)(nil))
)

func (f *liveFile) fill(_ context.Context, a *fuse.Attr) error {
	fileAttr(a, int64(len(f.content())), time.Now())
	return nil
}

func (f *liveFile) attrTTL() time.Duration { return unknownTTL }

func (f *liveFile) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fill(ctx, &out.Attr)
	out.SetTimeout(unknownTTL)
	return 0
}

func (f *liveFile) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if isWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	return &liveHandle{data: f.content()}, fuse.FOPEN_DIRECT_IO, 0
}

// liveHandle is one snapshot of a liveFile.
type liveHandle struct{ data []byte }

var _ = (gofs.FileReader)((*liveHandle)(nil))

func (h *liveHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(off+int64(len(dest)), int64(len(h.data)))]), 0
}
