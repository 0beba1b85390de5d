package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/regfs/regfs/blobio"
	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// prefetchFlags are the flags of `regfs prefetch`.
type prefetchFlags struct {
	partsFlags
	Quiet bool
}

// prefetchFileReaders bounds the files of a PATH prefetch read at once.
const prefetchFileReaders = 4

// prefetchIndexers bounds the index passes of a whole-image prefetch run
// at once; they read what was just pulled from the disk cache, so they are
// CPU work done while the next layer downloads.
const prefetchIndexers = 2

func newPrefetchCommand() *cobra.Command {
	var f prefetchFlags
	cmd := &cobra.Command{
		Use:   "prefetch [flags] REF [PATH...]",
		Short: "Pull an image, or some of its files, into the disk cache",
		Long: `Pull every layer blob of the image REF into the disk cache (--cache-dir) and
build each layer's index (tar entries, gzip checkpoints), so that a later
"regfs mount" with the same --cache-dir and --block-size reads the image's
blob, layer.tar and rootfs/ files without fetching layer bytes again.

REF is [host[:port]/]repository[:tag][@digest]; without a host it is on
Docker Hub, without a tag or digest it is :latest. For a multi-platform
image, --platform picks the manifest.

With PATHs (paths in the image's merged rootfs, as rootfs/ shows it), only
what reading the files at and under those paths needs is fetched: the
layers' indexes (for a plain gzip layer that is one pass over the whole
blob; an eStargz layer needs only its table of contents) and those files'
bytes. Symlinks in a PATH are followed; symlinks inside a directory are not.

Progress goes to stderr: a bar on a terminal, one line per layer otherwise.
Any failure (unknown image, refused credentials, a connection that stays
down after retries) ends the command with a non-zero status.`,
		Example: `  # Everything, so that a mount of it works offline-fast
  regfs prefetch ghcr.io/org/app:1.4
  regfs mount ghcr.io /mnt/ghcr

  # Just a few files, from a local registry, into a chosen cache
  regfs prefetch --cache-dir /var/cache/regfs localhost:5000/tools:latest /usr/bin/jq /etc/ssl

  # An arm64 image of a multi-platform tag, quietly
  regfs prefetch -q --platform linux/arm64/v8 docker.io/library/alpine:3.19`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPrefetch(cmd.Context(), f, args[0], args[1:], cmd.ErrOrStderr())
		},
	}
	addPartsFlags(cmd, &f.partsFlags)
	cmd.Flags().BoolVarP(&f.Quiet, "quiet", "q", false, "print nothing but errors")
	addLogFlags(cmd, &f.partsFlags, "warn")
	registerFlagCompletions(cmd)
	return cmd
}

// prefetchLayer is one layer of the image and its blob handle.
type prefetchLayer struct {
	num, of int // 1-based position, base first, and the layer count
	layer   *session.Layer
	blob    blobio.Source
}

func (pl prefetchLayer) name() string {
	id := pl.blob.Key()
	if d := pl.layer.Descriptor().Digest; d != "" {
		id = d.String()
	}
	if i := strings.IndexByte(id, ':'); i >= 0 && len(id) > i+13 {
		id = id[:i+13] // sha256:0123456789ab
	}
	return fmt.Sprintf("layer %d/%d %s", pl.num, pl.of, id)
}

func runPrefetch(ctx context.Context, f prefetchFlags, refArg string, paths []string, stderr io.Writer) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.CacheDir == "" {
		return errors.New("prefetch fills the disk cache: --cache-dir must name a directory")
	}
	ref, err := registry.ParseReference(refArg, registry.DockerHub)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() {
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("prefetch %s: interrupted", ref)
		}
	}()

	// A whole image's indexes read it back from the cache in one pass each,
	// past the memory cache. Some files: ranged requests only (a stream
	// runs ahead of what is read) and whole blocks (what is fetched must be
	// found in the cache later). docs/design/wiring.md says why.
	use := session.Options{IndexReads: layercache.OpenOptions{Sequential: true, SkipMemory: true}}
	if len(paths) == 0 {
		// Every blob is pulled whole: a pass over each costs no more
		// fetching and leaves an index that needs no checking.
		f.Published = publishedOff
	}
	if len(paths) > 0 {
		use.IndexReads = layercache.OpenOptions{WholeBlocks: true, Ranged: true}
	}
	p, err := newParts(ctx, f.partsFlags, ref.Registry, partsUse{Options: use})
	if err != nil {
		return err
	}
	defer p.Close() // waits for the disk writes of everything fetched
	prog := newProgress(stderr, progressModeFor(stderr, f.Quiet))
	defer prog.Close()
	if prog.mode == progressBar && f.LogFile == "" {
		p.log.SetOutput(prog)
	}

	started := time.Now()
	img, err := p.session.Client().Resolve(ctx, ref.Repository, ref.Identifier(), p.platform)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("no image %s: %w", ref, err)
	case errors.Is(err, registry.ErrUnauthorized):
		return fmt.Errorf("%s: the registry refused access (credentials come from ~/.docker/config.json): %w", ref, err)
	case err != nil:
		return err // it names the reference
	}
	if img.Manifest == nil && img.Index != nil {
		var have []string
		for _, pm := range img.Platforms {
			have = append(have, pm.Platform.String())
		}
		return fmt.Errorf("prefetch %s: the index has no manifest for --platform %s (it has %s)", ref, p.platform, strings.Join(have, ", "))
	}
	im := p.session.Image(ref.String(), img)
	layers := make([]prefetchLayer, len(im.Layers()))
	var total int64
	for i, l := range im.Layers() {
		b, err := l.Blob(ctx)
		if err != nil {
			return fmt.Errorf("prefetch %s: layer %d: %w", ref, i+1, err)
		}
		layers[i] = prefetchLayer{num: i + 1, of: len(layers), layer: l, blob: b}
		total += b.Size()
	}

	what := ref.String()
	if img.Platform.OS != "" && img.Index != nil {
		what += " (" + img.Platform.String() + ")"
	}
	fetched0 := p.cache.Stats().BytesFetched
	if len(paths) == 0 {
		if total > int64(f.DiskCacheSize) {
			return fmt.Errorf("prefetch %s: its layers take %s, more than --disk-cache-size %s: they would not stay cached",
				ref, humanBytes(total), humanBytes(int64(f.DiskCacheSize)))
		}
		err = prefetchLayers(ctx, p, layers, total, prog)
	} else {
		err = prefetchPaths(ctx, p, im, layers, paths, prog)
	}
	if err != nil {
		return fmt.Errorf("prefetch %s: %w", ref, err)
	}
	elapsed := time.Since(started)
	fetched := p.cache.Stats().BytesFetched - fetched0
	prog.Printf("prefetched %s: %s, %s; fetched %s from the registry in %s (%s)",
		what, plural(len(layers), "layer"), humanBytes(total), humanBytes(fetched), shortDuration(elapsed), rate(fetched, elapsed))
	return nil
}

// prefetchLayers pulls every layer's blob into the disk cache, one layer
// after another (each with the cache's own streaming or parallel ranged
// fetches), and builds each layer's index from the cache once its pull is
// done, while the next layer downloads. An index pass never runs beside
// its layer's pull: it would fetch some blocks a second time.
func prefetchLayers(ctx context.Context, p *parts, layers []prefetchLayer, total int64, prog *progress) error {
	prog.Phase("pulling", total)
	g, gctx := errgroup.WithContext(ctx)
	indexers := make(chan struct{}, prefetchIndexers)
	g.Go(func() error {
		for _, pl := range layers {
			prog.Label(pl.name())
			t0, f0 := time.Now(), p.cache.Stats().BytesFetched
			if err := pullBlob(gctx, p.cache.BlockSize(), pl, prog.Add); err != nil {
				return err
			}
			pulled, fetched := time.Since(t0), p.cache.Stats().BytesFetched-f0
			g.Go(func() error {
				select {
				case indexers <- struct{}{}:
				case <-gctx.Done():
					return gctx.Err()
				}
				defer func() { <-indexers }()
				t1 := time.Now()
				what, err := indexLayer(gctx, p, pl)
				if err != nil {
					return err
				}
				got := "already cached"
				if fetched > 0 {
					got = humanBytes(fetched) + " fetched"
				}
				prog.Printf("%s  %s  pulled in %s (%s, %s), indexed in %s (%s)", pl.name(), humanBytes(pl.blob.Size()),
					shortDuration(pulled), rate(pl.blob.Size(), pulled), got, shortDuration(time.Since(t1)), what)
				return nil
			})
		}
		prog.Label("indexing")
		return nil
	})
	return g.Wait()
}

// pullBlob reads a layer's blob from start to end through the cache, which
// stores every block in its disk tier and hashes the in-order pass: the read
// that ends it fails if the bytes do not match the layer's digest.
func pullBlob(ctx context.Context, blockSize int64, pl prefetchLayer, add func(int64)) error {
	r, err := pl.layer.Reader(ctx, layercache.OpenOptions{Sequential: true, SkipMemory: true})
	if err != nil {
		return fmt.Errorf("%s: %w", pl.name(), err)
	}
	defer r.Close()
	buf := make([]byte, blockSize)
	size := pl.blob.Size()
	for off := int64(0); off < size; {
		want := buf[:min(int64(len(buf)), size-off)]
		n, err := r.ReadAt(ctx, want, off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(want)) {
			return fmt.Errorf("%s: read at %d of %d: %w", pl.name(), off, size, err)
		}
		add(int64(n))
		off += int64(n)
	}
	return nil
}

// indexLayer builds and persists a layer's index from its cached blob:
// the full pass (tar size, restart points, entries) a mount's layer.tar
// and rootfs/ need, and for eStargz its table of contents too. A layer
// that is not a tar is not an error: its blob and layer.tar still serve.
func indexLayer(ctx context.Context, p *parts, pl prefetchLayer) (string, error) {
	ix, err := pl.layer.Index(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", pl.name(), err)
	}
	tarSize, err := ix.TarSize(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", pl.name(), err)
	}
	format, err := ix.Format(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", pl.name(), err)
	}
	x, err := ix.Index(ctx)
	switch {
	case errors.Is(err, layerindex.ErrBadTar):
		p.log.WithError(err).Warnf("%s: not a tar: rootfs/ of this image will not show it", pl.name())
		return fmt.Sprintf("%s, %s uncompressed, not a tar", format, humanBytes(tarSize)), nil
	case err != nil:
		return "", fmt.Errorf("%s: %w", pl.name(), err)
	}
	return fmt.Sprintf("%s, %s uncompressed, %d entries", format, humanBytes(tarSize), x.Len()), nil
}

// prefetchPaths reads the layers' indexes, then every regular file at or
// under paths in the merged rootfs, through the cache.
func prefetchPaths(ctx context.Context, p *parts, im *session.Image, layers []prefetchLayer, paths []string, prog *progress) error {
	fetched := func() int64 { return p.cache.Stats().BytesFetched }
	prog.PhaseFunc(fmt.Sprintf("indexing %d layers", len(layers)), 0, fetched)
	m, err := im.Rootfs(ctx)
	if err != nil {
		return err
	}
	files, size, err := m.DataFiles(paths)
	if err != nil {
		return err
	}
	prog.Printf("%s indexed; %s, %s, under %s", plural(len(layers), "layer"), plural(len(files), "file"), humanBytes(size), strings.Join(paths, " "))
	prog.Phase(plural(len(files), "file"), size)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchFileReaders)
	for _, sf := range files {
		pl := layers[sf.Layer]
		g.Go(func() error {
			ix, err := pl.layer.Index(gctx)
			if err != nil {
				return fmt.Errorf("%s: %w", pl.name(), err)
			}
			r, err := ix.OpenFile(gctx, sf.Entry)
			if err != nil {
				return fmt.Errorf("%s: %w", pl.name(), err)
			}
			if err := readAll(gctx, r, prog.Add); err != nil {
				return fmt.Errorf("%s: /%s: %w", pl.name(), sf.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// readAll reads r from start to end, discarding the bytes.
func readAll(ctx context.Context, r blobio.ReaderAt, add func(int64)) error {
	buf := make([]byte, 1<<20)
	size := r.Size()
	for off := int64(0); off < size; {
		want := buf[:min(int64(len(buf)), size-off)]
		n, err := r.ReadAt(ctx, want, off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(want)) {
			return fmt.Errorf("read at %d of %d: %w", off, size, err)
		}
		add(int64(n))
		off += int64(n)
	}
	return nil
}
