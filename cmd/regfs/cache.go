package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moby/sys/mountinfo"

	"github.com/regfs/regfs/layercache"
	"github.com/regfs/regfs/metastore"
)

// Where `regfs mount --cache-dir DIR` keeps its files: everything, blocks
// and persisted layer indexes alike, lives in layercache's disk tier under
// one bound. mount.go builds the same path; the mount tests check the two
// agree through real mounts.
const cacheBlocksSubdir = "blocks"

// diskTierDir is the layercache disk tier under a --cache-dir.
func diskTierDir(dir string) string { return filepath.Join(dir, cacheBlocksSubdir) }

// cacheMetaSubdir holds the metadata store (manifests and configs by
// digest, tag answers): small, and outside the disk tier's bound.
const cacheMetaSubdir = "meta"

// metaStoreDir is the metadata store under a --cache-dir.
func metaStoreDir(dir string) string { return filepath.Join(dir, cacheMetaSubdir) }

// procMounts is the mount table read by `cache clear`; tests point it at a
// file of their own.
var procMounts = "/proc/self/mountinfo"

// statusReadTimeout bounds reading one mount's .regfs/config: a hung mount
// must not hang `cache clear`.
const statusReadTimeout = 2 * time.Second

func newCacheCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect or clear the disk cache",
		Long: `Inspect or clear the disk cache that "regfs mount" keeps under --cache-dir:
blocks of blob bytes, content-addressed by blob digest, and layer indexes
(tar entries, gzip checkpoints, eStargz TOCs). Every mount on the machine
that uses the same directory shares it; it survives remounts and is bounded
by the mount's --disk-cache-size (least recently used first out).`,
		Example: `  # What is cached, and how much
  regfs cache ls
  regfs cache du --disk-cache-size 10G

  # Machine-readable
  regfs cache ls --json | jq '.blobs[].key'

  # Start over (refused while a mount uses the directory)
  regfs cache clear --cache-dir /var/cache/regfs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	def, _ := layercache.DefaultDiskDir() // "" if there is no home: then --cache-dir is required
	cmd.PersistentFlags().StringVar(&dir, "cache-dir", def, "cache directory, as given to regfs mount")
	cacheDir := func() (string, error) {
		if dir == "" {
			return "", errors.New("no cache directory: pass --cache-dir")
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("--cache-dir %q: %w", dir, err)
		}
		return abs, nil
	}
	cmd.AddCommand(newCacheLsCommand(cacheDir), newCacheDuCommand(cacheDir), newCacheClearCommand(cacheDir))
	return cmd
}

// cacheListing is what `cache ls --json` prints.
type cacheListing struct {
	Dir   string      `json:"dir"`
	Bytes int64       `json:"bytes"` // every file's size on disk
	Blobs []cacheBlob `json:"blobs"`
	Files []cacheFile `json:"files"`
}

// cacheBlob is one blob with bytes in the cache, and the images it belongs
// to as far as the metadata store knows (host/repo:tag, host/repo@digest).
type cacheBlob struct {
	layercache.BlobUsage
	Images []string `json:"images,omitempty"`
}

// cacheFile is one index or other derived file.
type cacheFile struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"` // tar-index, estargz-toc, or cache-file (any other file)
	DataBytes int64     `json:"data_bytes"`
	DiskBytes int64     `json:"disk_bytes"`
	LastUsed  time.Time `json:"last_used"`
}

// readCache lists everything under dir. A directory that does not exist
// holds nothing.
func readCache(ctx context.Context, dir string) (*cacheListing, error) {
	u, err := layercache.DiskUsage(ctx, diskTierDir(dir))
	if err != nil {
		return nil, err
	}
	images, err := blobImages(dir)
	if err != nil {
		return nil, err
	}
	l := &cacheListing{Dir: dir, Bytes: u.Bytes, Blobs: make([]cacheBlob, 0, len(u.Blobs)), Files: []cacheFile{}}
	for _, b := range u.Blobs {
		l.Blobs = append(l.Blobs, cacheBlob{BlobUsage: b, Images: images[b.Key]})
	}
	for _, f := range u.Files {
		kind := indexKind(f.Name) // PutFile names are "<blob key>.<kind>"
		if kind == "" {
			kind = "cache-file"
		}
		l.Files = append(l.Files, cacheFile{Name: f.Name, Kind: kind, DataBytes: f.DataBytes, DiskBytes: f.DiskBytes, LastUsed: f.LastUsed})
	}
	sort.Slice(l.Files, func(i, j int) bool { return l.Files[i].Name < l.Files[j].Name })
	return l, nil
}

// blobImages maps blob keys to the images the metadata store under dir
// knows them in; nothing if there is no store.
func blobImages(dir string) (map[string][]string, error) {
	md := metaStoreDir(dir)
	if _, err := os.Stat(md); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	store, err := metastore.Open(md, nil)
	if err != nil {
		return nil, err
	}
	return store.BlobImages()
}

func indexKind(name string) string {
	switch {
	case strings.HasPrefix(name, "."):
		return "" // temp files (".tmp-*") and anything hidden
	case strings.HasSuffix(name, ".idx"):
		return "tar-index"
	case strings.HasSuffix(name, ".toc"):
		return "estargz-toc"
	}
	return ""
}

func newCacheLsCommand(cacheDir func() (string, error)) *cobra.Command {
	var asJSON bool
	var sortBy string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List cached blobs and index files",
		Long: `List the blobs that have bytes in the disk cache (blocks held, bytes cached,
last use, and the images they belong to where regfs has resolved them) and
the index files kept beside them. Sizes are what the cache
holds, not the blobs' full sizes.`,
		Example: `  regfs cache ls
  regfs cache ls --sort used
  regfs cache ls --cache-dir /var/cache/regfs --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := cacheDir()
			if err != nil {
				return err
			}
			l, err := readCache(cmd.Context(), dir)
			if err != nil {
				return err
			}
			if err := sortListing(l, sortBy); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), l)
			}
			return writeListing(cmd.OutOrStdout(), l, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&sortBy, "sort", "name", "order: name, size (largest first) or used (most recent first)")
	return cmd
}

func sortListing(l *cacheListing, by string) error {
	var blobLess func(a, b cacheBlob) bool
	var fileLess func(a, b cacheFile) bool
	switch by {
	case "name", "":
		blobLess = func(a, b cacheBlob) bool { return a.Key < b.Key }
		fileLess = func(a, b cacheFile) bool { return a.Name < b.Name }
	case "size":
		blobLess = func(a, b cacheBlob) bool {
			return a.DiskBytes > b.DiskBytes || a.DiskBytes == b.DiskBytes && a.Key < b.Key
		}
		fileLess = func(a, b cacheFile) bool {
			return a.DiskBytes > b.DiskBytes || a.DiskBytes == b.DiskBytes && a.Name < b.Name
		}
	case "used":
		blobLess = func(a, b cacheBlob) bool {
			return a.LastUsed.After(b.LastUsed) || a.LastUsed.Equal(b.LastUsed) && a.Key < b.Key
		}
		fileLess = func(a, b cacheFile) bool {
			return a.LastUsed.After(b.LastUsed) || a.LastUsed.Equal(b.LastUsed) && a.Name < b.Name
		}
	default:
		return fmt.Errorf("--sort %q: want name, size or used", by)
	}
	sort.SliceStable(l.Blobs, func(i, j int) bool { return blobLess(l.Blobs[i], l.Blobs[j]) })
	sort.SliceStable(l.Files, func(i, j int) bool { return fileLess(l.Files[i], l.Files[j]) })
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeListing(w io.Writer, l *cacheListing, now time.Time) error {
	bw := bufio.NewWriter(w)
	if len(l.Blobs) == 0 && len(l.Files) == 0 {
		fmt.Fprintf(bw, "%s: empty\n", l.Dir)
		return bw.Flush()
	}
	if len(l.Blobs) > 0 {
		rows := [][]string{{"BLOB", "BLOCKS", "CACHED", "LAST USED", "IMAGES"}}
		for _, b := range l.Blobs {
			images := strings.Join(b.Images, ", ")
			if images == "" {
				images = "-"
			}
			rows = append(rows, []string{b.Key, strconv.Itoa(b.Blocks), humanBytes(b.DataBytes), lastUsed(b.LastUsed, now), images})
		}
		writeTable(bw, rows, []bool{false, true, true, false, false})
	}
	if len(l.Files) > 0 {
		if len(l.Blobs) > 0 {
			fmt.Fprintln(bw)
		}
		rows := [][]string{{"INDEX FILE", "KIND", "SIZE", "LAST USED"}}
		for _, f := range l.Files {
			rows = append(rows, []string{f.Name, f.Kind, humanBytes(f.DiskBytes), lastUsed(f.LastUsed, now)})
		}
		writeTable(bw, rows, []bool{false, false, true, false})
	}
	fmt.Fprintf(bw, "\n%s in %d blobs and %d index files under %s\n", humanBytes(l.Bytes), len(l.Blobs), len(l.Files), l.Dir)
	return bw.Flush()
}

// writeTable writes rows as columns two spaces apart, numbers (right[i])
// aligned right, the last column unpadded.
func writeTable(w io.Writer, rows [][]string, right []bool) {
	widths := make([]int, len(right))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-len(c))
			switch {
			case right[i]:
				b.WriteString(pad + c)
			case i == len(r)-1:
				b.WriteString(c)
			default:
				b.WriteString(c + pad)
			}
			if i < len(r)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// lastUsed is a local time, with how long ago for the last day.
func lastUsed(t, now time.Time) string {
	s := t.Local().Format("2006-01-02 15:04:05")
	if d := now.Sub(t); d >= 0 && d < 24*time.Hour {
		s += " (" + d.Truncate(time.Second).String() + " ago)"
	}
	return s
}

// humanBytes writes n in binary units with one decimal: 0 B, 512 B,
// 1.5 KiB, 12.0 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// cacheTotals is what `cache du --json` prints.
type cacheTotals struct {
	Dir        string `json:"dir"`
	Bytes      int64  `json:"bytes"`       // everything, on disk
	BlockBytes int64  `json:"block_bytes"` // blocks of blobs, trailers included
	IndexBytes int64  `json:"index_bytes"` // index files and other derived files
	Blobs      int    `json:"blobs"`
	Blocks     int    `json:"blocks"`
	Files      int    `json:"files"`
	LimitBytes int64  `json:"limit_bytes,omitempty"` // --disk-cache-size, if given
	OverLimit  bool   `json:"over_limit,omitempty"`
}

func totals(l *cacheListing, limit int64) cacheTotals {
	t := cacheTotals{Dir: l.Dir, Bytes: l.Bytes, Blobs: len(l.Blobs), Files: len(l.Files), LimitBytes: limit}
	for _, b := range l.Blobs {
		t.BlockBytes += b.DiskBytes
		t.Blocks += b.Blocks
	}
	for _, f := range l.Files {
		t.IndexBytes += f.DiskBytes
	}
	t.OverLimit = limit > 0 && t.Bytes > limit
	return t
}

func newCacheDuCommand(cacheDir func() (string, error)) *cobra.Command {
	var asJSON bool
	var limit byteSize
	cmd := &cobra.Command{
		Use:   "du",
		Short: "Show the disk cache's total size",
		Long: `Show how much the disk cache holds: blocks of blobs and index files, as
sizes on disk. With --disk-cache-size (the bound the mounts use), also how
full it is.`,
		Example: `  regfs cache du
  regfs cache du --disk-cache-size 10G
  regfs cache du --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := cacheDir()
			if err != nil {
				return err
			}
			l, err := readCache(cmd.Context(), dir)
			if err != nil {
				return err
			}
			t := totals(l, int64(limit))
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			return writeTotals(cmd.OutOrStdout(), t)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().Var(&limit, "disk-cache-size", "the mounts' disk cache bound, to compare against (e.g. 10G)")
	return cmd
}

func writeTotals(w io.Writer, t cacheTotals) error {
	line := fmt.Sprintf("%s\t%s\n", humanBytes(t.Bytes), t.Dir)
	detail := fmt.Sprintf("  blocks   %s in %d blocks of %d blobs\n  indexes  %s in %d files\n",
		humanBytes(t.BlockBytes), t.Blocks, t.Blobs, humanBytes(t.IndexBytes), t.Files)
	bound := ""
	if t.LimitBytes > 0 {
		bound = fmt.Sprintf("  bound    %s, %.1f%% used", humanBytes(t.LimitBytes), 100*float64(t.Bytes)/float64(t.LimitBytes))
		if t.OverLimit {
			bound += fmt.Sprintf(", over by %s", humanBytes(t.Bytes-t.LimitBytes))
		}
		bound += "\n"
	}
	_, err := io.WriteString(w, line+detail+bound)
	return err
}

func newCacheClearCommand(cacheDir func() (string, error)) *cobra.Command {
	var force, keepIndexes bool
	cmd := &cobra.Command{
		Use:   "clear",
		Short: "Remove everything from the disk cache",
		Long: `Remove every cached block, index file and the metadata kept for offline use
(manifests, configs, tag answers) under --cache-dir (nothing else in that
directory is touched). With --keep-indexes, only the blocks go: layer
indexes and metadata stay, so a later mount lists rootfs/ at once and reads a file with
the few ranges its index names. Refused while a regfs mount uses the
directory: unmount it first, or pass --force (the mount keeps working and
refetches what it needs).`,
		Example: `  regfs cache clear
  regfs cache clear --keep-indexes
  regfs cache clear --cache-dir /var/cache/regfs --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := cacheDir()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if !force {
				users, unknown, err := mountsUsing(ctx, procMounts, dir)
				if err != nil {
					return fmt.Errorf("check for mounts using %s: %w (pass --force to clear anyway)", dir, err)
				}
				for _, u := range unknown {
					fmt.Fprintf(cmd.ErrOrStderr(), "regfs: warning: cannot tell which cache %s uses: %v\n", u.mount.Mountpoint, u.err)
				}
				if len(users) > 0 {
					var names []string
					for _, m := range users {
						names = append(names, fmt.Sprintf("%s on %s", m.Source, m.Mountpoint))
					}
					return fmt.Errorf("%s is in use by %d regfs mount(s): %s; unmount first, or pass --force",
						dir, len(users), strings.Join(names, ", "))
				}
			}
			before, err := readCache(ctx, dir)
			if err != nil {
				return err
			}
			if keepIndexes {
				if err := layercache.ClearBlocks(ctx, diskTierDir(dir)); err != nil {
					return err
				}
				var blocks int64
				for _, b := range before.Blobs {
					blocks += b.DiskBytes
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cleared %s (%d blobs) from %s; kept %d index files\n",
					humanBytes(blocks), len(before.Blobs), dir, len(before.Files))
				return nil
			}
			if err := layercache.Clear(ctx, diskTierDir(dir)); err != nil {
				return err
			}
			if err := os.RemoveAll(metaStoreDir(dir)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cleared %s (%d blobs, %d index files) from %s\n",
				humanBytes(before.Bytes), len(before.Blobs), len(before.Files), dir)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "clear even while a regfs mount uses the directory")
	cmd.Flags().BoolVar(&keepIndexes, "keep-indexes", false, "remove the blocks only, keep the persisted layer indexes")
	return cmd
}

// mountEntry is one line of the mount table.
type mountEntry struct {
	Source, Mountpoint, FSType string
}

type unknownMount struct {
	mount mountEntry
	err   error
}

// mountsUsing returns the regfs mounts whose .regfs/config names dir as
// their cache directory, and the regfs mounts it could not ask (no status
// directory, a hung mount, a relative path it cannot resolve).
func mountsUsing(ctx context.Context, table, dir string) (users []mountEntry, unknown []unknownMount, err error) {
	mounts, err := regfsMounts(table)
	if err != nil {
		return nil, nil, err
	}
	want := canonicalPath(dir)
	// Asked all at once, so several hung mounts cost one timeout, not one each.
	type answer struct {
		dir string
		err error
	}
	answers := make([]chan answer, len(mounts))
	for i, m := range mounts {
		answers[i] = make(chan answer, 1)
		go func() {
			d, err := mountCacheDir(ctx, m.Mountpoint)
			answers[i] <- answer{d, err}
		}()
	}
	for i, m := range mounts {
		a := <-answers[i]
		cd, err := a.dir, a.err
		switch {
		case err != nil:
			unknown = append(unknown, unknownMount{m, err})
		case cd == "":
			// No disk cache.
		case !filepath.IsAbs(cd):
			unknown = append(unknown, unknownMount{m, fmt.Errorf("relative --cache-dir %q", cd)})
		case canonicalPath(cd) == want:
			users = append(users, m)
		}
	}
	return users, unknown, nil
}

func canonicalPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// regfsMounts lists the regfs FUSE mounts in a mount table in
// /proc/self/mountinfo's format.
func regfsMounts(table string) ([]mountEntry, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, mountinfo.FSTypeFilter("fuse.regfs"))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	out := make([]mountEntry, 0, len(infos))
	for _, m := range infos {
		out = append(out, mountEntry{Source: m.Source, Mountpoint: m.Mountpoint, FSType: m.FSType})
	}
	return out, nil
}

// mountCacheDir reads cache_dir from a regfs mount's .regfs/config,
// bounded by statusReadTimeout.
func mountCacheDir(ctx context.Context, mountpoint string) (string, error) {
	type result struct {
		data []byte
		err  error
	}
	ch := make(chan result, 1)
	// A hung FUSE server blocks the read in the kernel; the goroutine is
	// left behind, and the process exits soon after.
	go func() {
		b, err := os.ReadFile(filepath.Join(mountpoint, ".regfs", "config"))
		ch <- result{b, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(statusReadTimeout):
		return "", fmt.Errorf("reading .regfs/config timed out after %v", statusReadTimeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if r.err != nil {
		return "", r.err
	}
	var cfg struct {
		CacheDir *string `json:"cache_dir"`
	}
	if err := json.Unmarshal(r.data, &cfg); err != nil {
		return "", fmt.Errorf(".regfs/config: %w", err)
	}
	if cfg.CacheDir == nil {
		return "", errors.New(".regfs/config has no cache_dir")
	}
	return *cfg.CacheDir, nil
}
