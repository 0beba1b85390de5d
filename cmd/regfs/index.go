package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

func newIndexCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Publish layer indexes to the registry",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newIndexPushCommand())
	return cmd
}

func newIndexPushCommand() *cobra.Command {
	var f prefetchFlags
	cmd := &cobra.Command{
		Use:   "push [flags] REF",
		Short: "Build the layer indexes of an image and push them beside it",
		Long: `Build the index of every plain gzip layer of the image REF (tar entries, gzip
checkpoints and each regular file's sha256: one pass over each layer blob,
or none when --cache-dir holds it already) and push them to the image's own
repository as one OCI artifact (artifactType application/vnd.regfs.layer-index.v1)
whose subject is the image manifest: through the registry's referrers API
where it has one, else the referrers tag schema (tag sha256-<hex>).

A "regfs mount" or "regfs prefetch" of the image on another machine then
finds them (--published-indexes auto) and reads its first file without a pass
over the layer. eStargz, zstd and uncompressed layers need no published index.

REF is read as "regfs prefetch" reads it. The credentials must allow pushing
to the repository.`,
		Example: `  # In CI, after pushing the image
  docker push registry.example/app:1.4
  regfs index push registry.example/app:1.4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runIndexPush(cmd.Context(), f, args[0], cmd.OutOrStdout())
		},
	}
	addPartsFlags(cmd, &f.partsFlags)
	cmd.Flags().BoolVarP(&f.Quiet, "quiet", "q", false, "print nothing but errors")
	addLogFlags(cmd, &f.partsFlags, "warn")
	_ = cmd.Flags().MarkHidden("published-indexes") // the indexes pushed are always built here
	registerFlagCompletions(cmd)
	return cmd
}

func runIndexPush(ctx context.Context, f prefetchFlags, refArg string, stdout io.Writer) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ref, err := registry.ParseReference(refArg, registry.DockerHub)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The indexes are built here, never taken from the registry.
	f.Published = publishedOff
	use := session.Options{IndexReads: layercache.OpenOptions{Sequential: true, SkipMemory: true}}
	p, err := newParts(ctx, f.partsFlags, ref.Registry, partsUse{Options: use})
	if err != nil {
		return err
	}
	defer p.Close()
	img, err := p.session.Client().Resolve(ctx, ref.Repository, ref.Identifier(), p.platform)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("no image %s: %w", ref, err)
	case err != nil:
		return err
	}
	if img.Manifest == nil {
		return fmt.Errorf("index push %s: no manifest for --platform %s", ref, p.platform)
	}
	say := func(format string, a ...any) {
		if !f.Quiet {
			fmt.Fprintf(stdout, format+"\n", a...)
		}
	}
	started := time.Now()
	im := p.session.Image(img.ManifestDigest.String(), img)
	rep, err := p.session.PublishIndexes(ctx, im, func(layer digest.Digest, n int, err error) {
		if err != nil {
			say("%s: skipped (%v)", layer, err)
			return
		}
		say("%s: index of %s", layer, humanBytes(int64(n)))
	})
	if errors.Is(err, layerindex.ErrNothingToPublish) {
		return fmt.Errorf("index push %s: %w", ref, err)
	}
	if err != nil {
		return fmt.Errorf("index push %s: %w", ref, err)
	}
	how := "referrers tag " + registry.ReferrersTag(img.ManifestDigest)
	if rep.ReferrerAPI {
		how = "referrers API"
	}
	say("pushed %s@%s: %s for %s of layers (%.2f%%), via the %s, in %s",
		ref.Repository, rep.Manifest, humanBytes(rep.IndexBytes), humanBytes(rep.BlobBytes),
		100*float64(rep.IndexBytes)/float64(max(rep.BlobBytes, 1)), how, shortDuration(time.Since(started)))
	return nil
}
